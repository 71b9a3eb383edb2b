"""What a committed batch changes beyond its rows: each device's last contact and last
position (the map, the vehicle's position endpoint). Runs in the batch's transaction."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from ctafleet.telematics.ingest.writer import WriteResult
from ctafleet.telematics.models import Device, LastPosition
from ctafleet.telematics.points import Point

_devices = cast(Table, Device.__table__)
_last = cast(Table, LastPosition.__table__)

_SEEN = (
    update(_devices)
    .where(
        _devices.c.id == bindparam("b_id"),
        or_(_devices.c.last_seen_at.is_(None), _devices.c.last_seen_at < bindparam("b_seen")),
    )
    .values(last_seen_at=bindparam("b_seen"))
)
_FIX_FIELDS = ("lat", "lon", "speed_mps", "course_deg", "altitude_m", "accuracy_m")


def _newest_fix(points: list[Point]) -> Point | None:
    for point in reversed(points):
        if point.has_fix:
            return point
    return None


async def apply(session: AsyncSession, result: WriteResult, now: datetime) -> None:
    if not result.contacts:
        return
    # Device rows carry no version bump: last contact is no edit, and an ETag that changed
    # with every message would make every If-Match stale.
    await session.execute(
        _SEEN,
        [{"b_id": d, "b_seen": c.last_message_at} for d, c in result.contacts.items()],
    )
    devices = list(result.contacts)
    current = {
        row.device_id: row
        for row in await session.execute(select(_last).where(_last.c.device_id.in_(devices)))
    }
    rows = []
    for device_id, contact in result.contacts.items():
        row = _next_row(device_id, contact, current.get(device_id), result.new_points, now)
        if row is not None:
            rows.append(row)
    if rows:
        await _upsert(session, rows)


def _next_row(
    device_id: uuid.UUID,
    contact: Any,
    old: Any,
    new_points: dict[uuid.UUID, list[Point]],
    now: datetime,
) -> dict[str, Any] | None:
    row: dict[str, Any] = {
        "device_id": device_id,
        "tenant_id": contact.tenant_id,
        "vehicle_id": contact.vehicle_id,
        "updated_at": now,
    }
    for column in ("last_message_at", "fix_time", *_FIX_FIELDS, "battery_pct", "ignition"):
        row[column] = getattr(old, column) if old is not None else None
    row["odometer_m"] = old.odometer_m if old is not None else None
    if row["last_message_at"] is None or row["last_message_at"] < contact.last_message_at:
        row["last_message_at"] = contact.last_message_at
    fix = _newest_fix(new_points.get(device_id, []))
    if fix is not None and (row["fix_time"] is None or row["fix_time"] < fix.fix_time):
        row["fix_time"] = fix.fix_time
        for column in _FIX_FIELDS:
            row[column] = getattr(fix, column)
        row["battery_pct"] = fix.battery_pct
        row["ignition"] = fix.ignition
        if fix.odometer_m is not None:
            row["odometer_m"] = fix.odometer_m
    return row


async def _upsert(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    dialect = (await session.connection()).dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(_last)
    columns = [c for c in rows[0] if c != "device_id"]
    stmt = stmt.on_conflict_do_update(
        index_elements=[_last.c.device_id], set_={c: stmt.excluded[c] for c in columns}
    )
    await session.execute(stmt, rows)
