"""Trips, events and tracks as the derive stage stored them (`ctafleet.telematics.derived`)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from ctafleet.fleet.vehicles.service import get_vehicle
from ctafleet.kernel.context import Actor
from ctafleet.kernel.errors import Invalid
from ctafleet.telematics.derive import track
from ctafleet.telematics.models import Position, TelemetryEvent, TripRow
from ctafleet.telematics.points import Point
from ctafleet.telematics.service import get_device

# Stored positions a track may hold before simplification: a day at 1 Hz, with room.
MAX_TRACK_POINTS = 100_000
# Without `since`, a track covers the day before `until`.
DEFAULT_TRACK_SPAN = timedelta(days=1)
# Ranges longer than this are simplified by default (`simplify=0` asks for every position).
SIMPLIFY_AFTER = timedelta(hours=1)


def _range(since: datetime | None, until: datetime | None) -> None:
    if since is not None and until is not None and until < since:
        raise Invalid("until", "until is before since", slug="bad-range")


async def trips_query(
    *,
    session: AsyncSession,
    actor: Actor,
    vehicle_id: uuid.UUID,
    since: datetime | None,
    until: datetime | None,
) -> Select[Any]:
    """The vehicle's trips that overlap the range (404 for a vehicle the actor cannot see)."""
    await get_vehicle(session=session, actor=actor, vehicle_id=vehicle_id)
    _range(since, until)
    stmt = select(TripRow).where(TripRow.vehicle_id == vehicle_id)
    if since is not None:
        stmt = stmt.where(TripRow.end_time >= since)
    if until is not None:
        stmt = stmt.where(TripRow.start_time <= until)
    return stmt


def events_query(
    *,
    vehicle_id: uuid.UUID | None,
    device_id: uuid.UUID | None,
    types: Sequence[str] | None,
    since: datetime | None,
    until: datetime | None,
) -> Select[Any]:
    """The tenant's events (the session's scope), filtered; another tenant's ids match none."""
    _range(since, until)
    stmt = select(TelemetryEvent)
    if vehicle_id is not None:
        stmt = stmt.where(TelemetryEvent.vehicle_id == vehicle_id)
    if device_id is not None:
        stmt = stmt.where(TelemetryEvent.device_id == device_id)
    if types:
        stmt = stmt.where(TelemetryEvent.type.in_(types))
    if since is not None:
        stmt = stmt.where(TelemetryEvent.time >= since)
    if until is not None:
        stmt = stmt.where(TelemetryEvent.time <= until)
    return stmt


@dataclass(frozen=True)
class Track:
    name: str
    points: list[track.TrackPoint]
    # Positions in the range before simplification, and the tolerance applied (0: none).
    stored: int
    tolerance_m: float


async def device_track(
    *,
    session: AsyncSession,
    actor: Actor,
    device_id: uuid.UUID,
    since: datetime | None,
    until: datetime | None,
    simplify_m: float | None,
) -> Track:
    """The device's fixes in the range, simplified to `simplify_m` metres (None: by default
    for a range over `SIMPLIFY_AFTER`)."""
    device = await get_device(session=session, actor=actor, device_id=device_id)
    until = until or actor.now()
    since = since or until - DEFAULT_TRACK_SPAN
    _range(since, until)
    in_range = (
        Position.device_id == device_id,
        Position.fix_time >= since,
        Position.fix_time <= until,
    )
    count = int(await session.scalar(select(func.count()).where(*in_range)) or 0)
    if count > MAX_TRACK_POINTS:
        raise Invalid(
            "since",
            f"the range holds {count} positions; at most {MAX_TRACK_POINTS} make one track: "
            "ask for a shorter range",
            slug="track-too-long",
        )
    rows = await session.execute(
        select(
            Position.fix_time,
            Position.lat,
            Position.lon,
            Position.valid,
            Position.speed_mps,
            Position.course_deg,
            Position.altitude_m,
        )
        .where(*in_range)
        .order_by(Position.fix_time)
    )
    uid = device.unique_id
    points = track.from_points(
        Point(
            device_uid=uid,
            fix_time=r.fix_time,
            lat=r.lat,
            lon=r.lon,
            valid=r.valid,
            speed_mps=r.speed_mps,
            course_deg=r.course_deg,
            altitude_m=r.altitude_m,
        )
        for r in rows
    )
    tolerance = simplify_m
    if tolerance is None:
        tolerance = track.DEFAULT_TOLERANCE_M if until - since > SIMPLIFY_AFTER else 0.0
    if tolerance > 0:
        points = track.simplify(points, tolerance_m=tolerance)
    return Track(
        name=device.name or device.unique_id, points=points, stored=count, tolerance_m=tolerance
    )
