"""Geofences: create, read, list, change, delete, export; and their engine form."""

from __future__ import annotations

import math
import uuid
from typing import Any

import shapely  # type: ignore[import-untyped]
from shapely.geometry import Polygon, shape  # type: ignore[import-untyped]
from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from ctafleet.db import toolkit
from ctafleet.db.toolkit import IfMatch
from ctafleet.kernel.context import Actor
from ctafleet.kernel.errors import Conflict, Invalid
from ctafleet.telematics.derive.geofences import Geofence, Schedule
from ctafleet.telematics.geofences.models import GeofenceRow
from ctafleet.telematics.geofences.schemas import GeofenceCreate, GeofenceUpdate

ENTITY = "geofence"
# Vertices of all rings together: enough for a detailed district boundary; containment costs
# grow with them on every point inside the geofence's box.
MAX_VERTICES = 2000
NULLABLE = frozenset({"radius_m", "speed_limit_mps", "dwell_s", "schedule"})


def engine_geofence(row: GeofenceRow) -> Geofence:
    """The derive engine's form of a stored geofence (ValueError if it is unusable)."""
    schedule = Schedule.from_json(row.schedule) if row.schedule else None
    options: dict[str, Any] = {
        "speed_limit_mps": row.speed_limit_mps,
        "schedule": schedule,
        "dwell_s": row.dwell_s,
    }
    if row.kind == "circle":
        lon, lat = row.geometry["coordinates"][:2]
        if row.radius_m is None:
            raise ValueError(f"geofence {row.id}: a circle without a radius")
        return Geofence.from_circle(
            id=row.id, name=row.name, lat=lat, lon=lon, radius_m=row.radius_m, **options
        )
    return Geofence(id=row.id, name=row.name, geometry=shape(row.geometry), **options)


def _position(raw: list[float], where: str) -> tuple[float, float]:
    lon, lat = float(raw[0]), float(raw[1])
    if not (math.isfinite(lon) and math.isfinite(lat)):
        raise Invalid(where, "coordinates must be finite numbers", slug="invalid-geometry")
    if not (-180.0 <= lon <= 180.0 and -90.0 <= lat <= 90.0):
        raise Invalid(
            where,
            f"[{lon}, {lat}] is out of range: [longitude -180..180, latitude -90..90]",
            slug="invalid-geometry",
        )
    return lon, lat


def checked_geometry(
    geometry: dict[str, Any], radius_m: float | None
) -> tuple[str, dict[str, Any], float | None]:
    """(kind, the geometry as stored, radius) of a valid geometry; `Invalid` (422) otherwise."""
    if geometry["type"] == "Point":
        lon, lat = _position(geometry["coordinates"], "geometry.coordinates")
        if radius_m is None:
            raise Invalid("radius_m", "a Point geometry is a circle: give its radius_m")
        return "circle", {"type": "Point", "coordinates": [lon, lat]}, radius_m
    if radius_m is not None:
        raise Invalid("radius_m", "radius_m goes only with a Point (circle) geometry")
    rings: list[list[tuple[float, float]]] = []
    vertices = 0
    for i, raw_ring in enumerate(geometry["coordinates"]):
        where = f"geometry.coordinates.{i}"
        ring = [_position(p, f"{where}.{j}") for j, p in enumerate(raw_ring)]
        if len(ring) < 4:
            raise Invalid(
                where, "a ring needs at least 4 positions (3 corners and the first again)",
                slug="invalid-geometry",
            )  # fmt: skip
        if ring[0] != ring[-1]:
            raise Invalid(
                where, "the ring is not closed: its last position must equal its first",
                slug="invalid-geometry",
            )  # fmt: skip
        vertices += len(ring) - 1
        rings.append(ring)
    if vertices > MAX_VERTICES:
        raise Invalid(
            "geometry.coordinates",
            f"{vertices} vertices; at most {MAX_VERTICES} (simplify the boundary)",
            slug="invalid-geometry",
        )
    polygon = Polygon(rings[0], rings[1:])
    if polygon.is_empty or polygon.area == 0:
        raise Invalid("geometry", "the polygon encloses no area", slug="invalid-geometry")
    if not polygon.is_valid:
        raise Invalid(
            "geometry",
            f"the polygon is not valid: {shapely.is_valid_reason(polygon)}",
            slug="invalid-geometry",
        )
    coordinates = [[[lon, lat] for lon, lat in ring] for ring in rings]
    return "polygon", {"type": "Polygon", "coordinates": coordinates}, None


def _checked_schedule(schedule: dict[str, Any] | None) -> dict[str, Any] | None:
    if schedule is None:
        return None
    try:
        Schedule.from_json(schedule)
    except ValueError as exc:
        raise Invalid("schedule", str(exc)) from exc
    return schedule


def _engine_check(values: dict[str, Any]) -> None:
    # What the worker will build from the row, built now: a row it cannot use is a 422 here.
    probe = GeofenceRow(id=uuid.uuid4(), **values)
    try:
        engine_geofence(probe)
    except ValueError as exc:
        raise Invalid("geometry", str(exc), slug="invalid-geometry") from exc


def geofences_query(*, active: bool | None = None, kind: str | None = None) -> Select[Any]:
    stmt = select(GeofenceRow)
    if active is not None:
        stmt = stmt.where(GeofenceRow.active == active)
    if kind:
        stmt = stmt.where(GeofenceRow.kind == kind)
    return stmt


async def _unique(session: AsyncSession, name: str, exclude: uuid.UUID | None = None) -> None:
    stmt = select(GeofenceRow.id).where(GeofenceRow.name == name)
    if exclude is not None:
        stmt = stmt.where(GeofenceRow.id != exclude)
    if (await session.scalars(stmt)).first():
        raise Conflict("duplicate-geofence", f"a geofence named {name!r} already exists")


async def create_geofence(
    *, session: AsyncSession, actor: Actor, data: GeofenceCreate
) -> GeofenceRow:
    values = data.model_dump()
    kind, geometry, radius = checked_geometry(values["geometry"], values["radius_m"])
    values.update(kind=kind, geometry=geometry, radius_m=radius)
    values["schedule"] = _checked_schedule(values["schedule"])
    _engine_check(values)

    async def recheck() -> None:
        await _unique(session, values["name"])

    await recheck()
    row = GeofenceRow(**values)
    return await toolkit.create(session, actor, row, entity=ENTITY, recheck=recheck)


async def get_geofence(
    *, session: AsyncSession, actor: Actor, geofence_id: uuid.UUID
) -> GeofenceRow:
    return await toolkit.get(session, actor, GeofenceRow, geofence_id, entity=ENTITY)


async def update_geofence(
    *,
    session: AsyncSession,
    actor: Actor,
    geofence_id: uuid.UUID,
    data: GeofenceUpdate,
    if_match: IfMatch | None,
) -> GeofenceRow:
    row = await toolkit.get(
        session, actor, GeofenceRow, geofence_id, entity=ENTITY, for_update=True
    )
    toolkit.check_version(row.version, if_match)
    changes = data.model_dump(exclude_unset=True)
    for key, value in changes.items():
        if value is None and key not in NULLABLE:
            raise Invalid(key, f"{key} cannot be null")
    if "geometry" in changes or "radius_m" in changes:
        geometry = changes.get("geometry", row.geometry)
        radius = changes.get("radius_m", row.radius_m)
        if "geometry" in changes and "radius_m" not in changes and geometry["type"] != "Point":
            radius = None  # a circle redrawn as a polygon loses its radius
        kind, geometry, radius = checked_geometry(geometry, radius)
        changes.update(kind=kind, geometry=geometry, radius_m=radius)
    if "schedule" in changes:
        changes["schedule"] = _checked_schedule(changes["schedule"])
    merged = {
        k: changes.get(k, getattr(row, k))
        for k in ("name", "kind", "geometry", "radius_m", "speed_limit_mps", "schedule", "dwell_s")
    }
    _engine_check(merged)

    async def recheck() -> None:
        await _unique(session, merged["name"], row.id)

    if "name" in changes:
        await recheck()
    return await toolkit.update(
        session, actor, row, changes, entity=ENTITY, if_match=if_match, recheck=recheck
    )


async def delete_geofence(
    *, session: AsyncSession, actor: Actor, geofence_id: uuid.UUID, if_match: IfMatch | None
) -> None:
    row = await toolkit.get(
        session, actor, GeofenceRow, geofence_id, entity=ENTITY, for_update=True
    )
    toolkit.check_version(row.version, if_match)
    await toolkit.delete(session, actor, row, entity=ENTITY)


def feature(row: GeofenceRow) -> dict[str, Any]:
    """The geofence as a GeoJSON Feature (a circle: its centre, with `radius_m`)."""
    return {
        "type": "Feature",
        "id": str(row.id),
        "geometry": row.geometry,
        "properties": {
            "name": row.name,
            "kind": row.kind,
            "radius_m": row.radius_m,
            "speed_limit_mps": row.speed_limit_mps,
            "dwell_s": row.dwell_s,
            "schedule": row.schedule,
            "active": row.active,
            "version": row.version,
        },
    }


async def feature_collection(
    *, session: AsyncSession, actor: Actor, active: bool | None = None
) -> dict[str, Any]:
    """Every geofence of the tenant (that matches) as one FeatureCollection, by name."""
    stmt = geofences_query(active=active).order_by(GeofenceRow.name, GeofenceRow.id)
    rows = list(await session.scalars(stmt))
    return {"type": "FeatureCollection", "features": [feature(r) for r in rows]}
