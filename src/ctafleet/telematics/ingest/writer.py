"""The batch writer: a batch of envelopes into `positions`, idempotent on (device, fix time).

PostgreSQL: `COPY` into a per-connection staging table, then one
`INSERT ... SELECT ... ON CONFLICT DO NOTHING RETURNING` that says which points are new (a
redelivered batch stores nothing twice and derives nothing twice). SQLite: one `executemany`
of the points not stored yet, in the batch's transaction (SQLite has one writer at a time).

The caller owns the transaction (a system session: a batch spans tenants).
"""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import orjson
from sqlalchemy import Table, and_, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from ctafleet.telematics.derive.events import Event
from ctafleet.telematics.ingest.envelope import Envelope
from ctafleet.telematics.models import Position
from ctafleet.telematics.points import Point

COLUMNS = (
    # The envelope's, the same for all its points (one tuple per envelope, see `_rows`).
    "tenant_id",
    "device_id",
    "received_at",
    "vehicle_id",
    # The point's.
    "fix_time",
    "lat",
    "lon",
    "valid",
    "server_time",
    "speed_mps",
    "course_deg",
    "altitude_m",
    "accuracy_m",
    "hdop",
    "battery_pct",
    "charging",
    "ignition",
    "odometer_m",
    "driver_unique_id",
    "attributes",
)
_STAGING = "positions_in"
_STAGING_DDL = (
    f"CREATE TEMP TABLE IF NOT EXISTS {_STAGING} "
    "(LIKE positions INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
)
# Built from the constants above, no input.
_MERGE = (
    f"INSERT INTO positions ({', '.join(COLUMNS)}) "  # noqa: S608
    f"SELECT {', '.join(COLUMNS)} FROM {_STAGING} "
    "ON CONFLICT DO NOTHING RETURNING device_id, fix_time"
)


@dataclass(frozen=True, slots=True)
class Contact:
    tenant_id: uuid.UUID
    vehicle_id: uuid.UUID | None
    last_message_at: datetime


@dataclass
class WriteResult:
    # Per device, the points this batch stored for the first time, in fix-time order.
    new_points: dict[uuid.UUID, list[Point]] = field(default_factory=dict)
    # Per device, its newest message in the batch (with or without coordinates).
    contacts: dict[uuid.UUID, Contact] = field(default_factory=dict)
    stored: int = 0
    duplicates: int = 0
    # Per device, the events in-batch stages derived from the new points, for the after-commit
    # stages (live feed, notifications) to pass on; tenant and vehicle are in `contacts`.
    events: dict[uuid.UUID, list[Event]] = field(default_factory=dict)


# The batch's distinct storable points: per device, by fix time, (row head, point).
Collected = dict[uuid.UUID, dict[datetime, tuple[tuple[Any, ...], Point]]]


def _collect(envelopes: list[Envelope]) -> tuple[Collected, WriteResult]:
    """The batch's distinct storable points (the first delivery wins) and contacts.

    Keyed per device, then per fix time: hashing a (UUID, datetime) pair per point was a
    quarter of the worker's time, as profiled."""
    points: Collected = {}
    result = WriteResult()
    for env in envelopes:
        newest = max((p.fix_time for p in env.points), default=env.received_at)
        contact = result.contacts.get(env.device_id)
        last = max(newest, env.received_at)
        if contact is None or contact.last_message_at < last:
            result.contacts[env.device_id] = Contact(env.tenant_id, env.vehicle_id, last)
        mine = points.get(env.device_id)
        if mine is None:
            mine = points[env.device_id] = {}
        head = (env.tenant_id, env.device_id, env.received_at, env.vehicle_id)
        for p in env.points:
            # A message without coordinates (a heartbeat) only updates the last contact.
            if p.lat is not None and p.lon is not None and p.fix_time not in mine:
                mine[p.fix_time] = (head, p)
    return points, result


def _row(head: tuple[Any, ...], p: Point) -> tuple[Any, ...]:
    return (
        *head,
        p.fix_time,
        p.lat,
        p.lon,
        p.valid,
        p.server_time,
        p.speed_mps,
        p.course_deg,
        p.altitude_m,
        p.accuracy_m,
        p.hdop,
        p.battery_pct,
        p.charging,
        p.ignition,
        p.odometer_m,
        p.driver_unique_id,
        p.attributes or None,
    )


def row_of(env: Envelope, p: Point) -> tuple[Any, ...]:
    """The `positions` row of one point, in COLUMNS order."""
    return _row((env.tenant_id, env.device_id, env.received_at, env.vehicle_id), p)


async def write(session: AsyncSession, envelopes: list[Envelope]) -> WriteResult:
    """Store the batch's points (inside the caller's transaction)."""
    points, result = _collect(envelopes)
    if not any(points.values()):  # heartbeats only: contacts, no rows
        return result
    connection = await session.connection()
    if connection.dialect.name == "postgresql":
        new_keys = await _write_postgres(session, points)
    else:
        new_keys = await _write_other(session, points)
    by_device: dict[uuid.UUID, list[Point]] = defaultdict(list)
    for device, fix_time in new_keys:
        by_device[device].append(points[device][fix_time][1])
    for device, device_points in by_device.items():
        device_points.sort(key=lambda p: p.fix_time)
        result.new_points[device] = device_points
    result.stored = len(new_keys)
    result.duplicates = sum(len(e.points) for e in envelopes) - result.stored
    return result


# Months whose partition this process has seen exist: a batch asks PostgreSQL only for others.
# Forgotten after a failed batch and every PARTITIONS_TTL_S, since another process may have
# dropped one (`ctafleet telemetry prune`): the next batch that needs it creates it again.
PARTITIONS_TTL_S = 3600.0
# Keyed by database (a process may write to more than one: tests, a migration).
_known_partitions: set[tuple[str, int, int]] = set()
_known_since = time.monotonic()


async def _ensure_partitions(connection: Any, times: Any) -> None:
    global _known_since
    if time.monotonic() - _known_since > PARTITIONS_TTL_S:
        forget_partitions()
    database = connection.engine.url.render_as_string(hide_password=True)
    months = {(database, t.year, t.month) for t in times} - _known_partitions
    if not months:
        return
    raw = await connection.get_raw_connection()
    for key in sorted(months):
        start = datetime(key[1], key[2], 1, tzinfo=UTC)
        await raw.driver_connection.execute("SELECT ctafleet_positions_partition($1)", start)
        _known_partitions.add(key)


def forget_partitions() -> None:
    """After partitions were dropped (retention) or a batch failed, the next batch checks again."""
    global _known_since
    _known_partitions.clear()
    _known_since = time.monotonic()


def months_ahead(now: datetime, count: int = 3) -> list[datetime]:
    """The first instants of this month and the `count - 1` next ones (UTC)."""
    base = now.astimezone(UTC).year * 12 + now.astimezone(UTC).month - 1
    return [datetime(m // 12, m % 12 + 1, 1, tzinfo=UTC) for m in range(base, base + count)]


async def ensure_partitions_ahead(session: AsyncSession, now: datetime) -> None:
    """Create this month's partition and the next two (PostgreSQL; nothing elsewhere), so a
    month never starts with the first batch paying for its partition."""
    connection = await session.connection()
    if connection.dialect.name != "postgresql":
        return
    await _ensure_partitions(connection, months_ahead(now))


async def _write_postgres(
    session: AsyncSession, points: Collected
) -> list[tuple[uuid.UUID, datetime]]:
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    driver: Any = raw.driver_connection
    await _ensure_partitions(
        connection, (t.astimezone(UTC) for mine in points.values() for t in mine)
    )
    await driver.execute(_STAGING_DDL)
    records = []
    for mine in points.values():
        for head, p in mine.values():
            row = _row(head, p)
            if row[-1] is not None:  # the connection's jsonb codec takes JSON text
                row = (*row[:-1], orjson.dumps(row[-1]).decode())
            records.append(row)
    await driver.copy_records_to_table(_STAGING, records=records, columns=COLUMNS)
    rows = await driver.fetch(_MERGE)
    return [(r["device_id"], r["fix_time"].astimezone(UTC)) for r in rows]


async def _write_other(
    session: AsyncSession, points: Collected
) -> list[tuple[uuid.UUID, datetime]]:
    # Which keys are stored already: one range read per device, then an executemany of the rest.
    table = cast(Table, Position.__table__)
    existing: set[tuple[uuid.UUID, datetime]] = set()
    for device, mine in points.items():
        if not mine:
            continue
        stmt = select(table.c.device_id, table.c.fix_time).where(
            and_(
                table.c.device_id == device,
                table.c.fix_time >= min(mine),
                table.c.fix_time <= max(mine),
            )
        )
        existing.update((row[0], row[1]) for row in await session.execute(stmt))
    new = [(d, t) for d, mine in points.items() for t in mine if (d, t) not in existing]
    if new:
        await session.execute(
            insert(table),
            [dict(zip(COLUMNS, _row(*points[d][t]), strict=True)) for d, t in new],
        )
    return new
