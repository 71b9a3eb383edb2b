"""Positions: reading what devices reported (a device's positions, a vehicle's last position,
the fleet snapshot for the map) and accepting batches sent through the API."""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ctafleet.fleet.vehicles.service import get_vehicle
from ctafleet.kernel.context import Actor
from ctafleet.kernel.errors import Invalid
from ctafleet.telematics.ingest import batch
from ctafleet.telematics.ingest.credentials import DeviceAuth
from ctafleet.telematics.ingest.envelope import Envelope
from ctafleet.telematics.ingest.queue import TelemetryQueue
from ctafleet.telematics.models import Device, LastPosition, Position
from ctafleet.telematics.service import get_device

MAX_PAGE = 5000
ENVELOPE_POINTS = 500


async def device_positions(
    *,
    session: AsyncSession,
    actor: Actor,
    device_id: uuid.UUID,
    since: datetime | None,
    until: datetime | None,
    after: datetime | None,
    limit: int,
) -> tuple[list[Position], datetime | None]:
    """The device's positions in fix-time order from `since` (or after the cursor's time) to
    `until`, and the cursor of the next page (None on the last)."""
    await get_device(session=session, actor=actor, device_id=device_id)
    if since is not None and until is not None and until < since:
        raise Invalid("until", "until is before since", slug="bad-range")
    stmt = select(Position).where(Position.device_id == device_id)
    if after is not None:
        stmt = stmt.where(Position.fix_time > after)
    elif since is not None:
        stmt = stmt.where(Position.fix_time >= since)
    if until is not None:
        stmt = stmt.where(Position.fix_time <= until)
    rows = list(await session.scalars(stmt.order_by(Position.fix_time).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (rows[-1].fix_time if more else None)


async def vehicle_position(
    *, session: AsyncSession, actor: Actor, vehicle_id: uuid.UUID
) -> LastPosition | None:
    """The newest fix of the vehicle's devices (a vehicle may carry a tracker and a phone)."""
    await get_vehicle(session=session, actor=actor, vehicle_id=vehicle_id)
    rows = await session.scalars(
        select(LastPosition)
        .where(LastPosition.vehicle_id == vehicle_id, LastPosition.fix_time.is_not(None))
        .order_by(LastPosition.fix_time.desc())
        .limit(1)
    )
    return rows.first()


async def snapshot(
    *, session: AsyncSession, actor: Actor, vehicle_id: uuid.UUID | None = None
) -> list[LastPosition]:
    """Every device's last position in the tenant (the fleet map's first paint)."""
    stmt = select(LastPosition).order_by(LastPosition.device_id)
    if vehicle_id is not None:
        stmt = stmt.where(LastPosition.vehicle_id == vehicle_id)
    return list(await session.scalars(stmt))


@dataclass
class BatchResult:
    accepted: int
    rejected: list[batch.Rejected]


async def accept_batch(
    *,
    session: AsyncSession | None,
    actor: Actor | None,
    device: DeviceAuth | None,
    queue: TelemetryQueue,
    body: bytes,
    now: datetime,
    max_points: int,
) -> BatchResult:
    """Queue a batch sent by a device (its credential) or by a user for the tenant's devices.

    Points naming a device the tenant does not have (or an inactive one) are rejected one by
    one, as are points that do not check out; the rest are queued. Raises `batch.BatchError`
    for a body that is no batch at all, `QueueFull`/`QueueUnavailable` when nothing can be
    queued."""
    parsed = batch.parse(
        body, now=now, max_points=max_points, device=device.unique_id if device else None
    )
    rejected = list(parsed.rejected)
    by_uid: dict[str, list[int]] = defaultdict(list)
    for n, point in enumerate(parsed.points):
        by_uid[point.device_uid].append(n)
    targets: dict[str, DeviceAuth] = {}
    if device is not None:
        targets[device.unique_id] = device
    elif by_uid:
        if session is None or actor is None:
            raise ValueError("a user's batch needs the user's session and actor")
        rows = await session.execute(
            select(Device.id, Device.tenant_id, Device.vehicle_id, Device.unique_id).where(
                Device.unique_id.in_(list(by_uid)), Device.is_active.is_(True)
            )
        )
        targets = {
            r.unique_id: DeviceAuth(r.id, r.tenant_id, r.vehicle_id, r.unique_id) for r in rows
        }
    # Indexes of the parsed points in the request: the rejected ones are not among them.
    taken = {r.index for r in parsed.rejected}
    original = [i for i in range(len(parsed.points) + len(taken)) if i not in taken]
    envelopes = []
    accepted = 0
    for uid, indexes in by_uid.items():
        target = targets.get(uid)
        if target is None:
            rejected += [batch.Rejected(original[n], "unknown-device", "device") for n in indexes]
            continue
        # Queue entries of bounded size: a worker batch is counted in entries.
        for start in range(0, len(indexes), ENVELOPE_POINTS):
            points = tuple(parsed.points[n] for n in indexes[start : start + ENVELOPE_POINTS])
            envelopes.append(
                Envelope(
                    tenant_id=target.tenant_id,
                    device_id=target.device_id,
                    vehicle_id=target.vehicle_id,
                    received_at=now,
                    points=points,
                )
            )
            accepted += len(points)
    if envelopes:
        await queue.put(envelopes)
    rejected.sort(key=lambda r: r.index)
    return BatchResult(accepted, rejected)
