from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field

from ctafleet.kernel.schemas import ReadModel, Strict

# A GeoJSON position: longitude, latitude (an altitude, if sent, is ignored).
Position = Annotated[list[float], Field(min_length=2, max_length=3)]
GeofenceKind = Literal["polygon", "circle"]


class PolygonGeometry(Strict):
    type: Literal["Polygon"]
    coordinates: list[list[Position]] = Field(
        min_length=1,
        description="Rings of [lon, lat] positions, each closed (first = last): the outer "
        "boundary, then any holes.",
    )


class PointGeometry(Strict):
    type: Literal["Point"]
    coordinates: Position = Field(description="The circle's centre, [lon, lat].")


Geometry = Annotated[PolygonGeometry | PointGeometry, Field(discriminator="type")]


class Window(Strict):
    days: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] = Field(
        min_length=1, max_length=7
    )
    start: str = Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$", description="Local time, HH:MM.")
    end: str = Field(
        pattern=r"^([01]\d|2[0-3]):[0-5]\d$",
        description="Local time, HH:MM; at or before `start`: past midnight.",
    )


class Schedule(Strict):
    """The weekly windows in which the geofence exists (outside them a vehicle is outside it)."""

    timezone: str = Field(max_length=64, description="IANA time zone, e.g. `Europe/Helsinki`.")
    windows: list[Window] = Field(min_length=1, max_length=50)


class GeofenceCreate(Strict):
    name: str = Field(min_length=1, max_length=100)
    geometry: Geometry = Field(
        description="GeoJSON: a Polygon, or a circle's centre as a Point with `radius_m`."
    )
    radius_m: float | None = Field(
        None, gt=0, le=100_000, description="The circle's radius (with a Point geometry)."
    )
    speed_limit_mps: float | None = Field(
        None, gt=0, le=100, description="Overspeed inside the geofence above this."
    )
    dwell_s: float | None = Field(
        None, gt=0, le=7 * 86400, description="Inside this long: a dwell event."
    )
    schedule: Schedule | None = None
    active: bool = True


class GeofenceUpdate(Strict):
    name: str | None = Field(None, min_length=1, max_length=100)
    geometry: Geometry | None = None
    radius_m: float | None = Field(None, gt=0, le=100_000)
    speed_limit_mps: float | None = Field(None, gt=0, le=100)
    dwell_s: float | None = Field(None, gt=0, le=7 * 86400)
    schedule: Schedule | None = None
    active: bool | None = None


class GeofenceRead(ReadModel):
    id: uuid.UUID
    name: str
    kind: GeofenceKind
    geometry: dict[str, Any] = Field(description="GeoJSON Polygon, or Point with `radius_m`.")
    radius_m: float | None
    speed_limit_mps: float | None
    dwell_s: float | None
    schedule: dict[str, Any] | None
    active: bool
    created_at: datetime
    updated_at: datetime
    version: int
