"""The offline sweep: device_offline for the devices that went silent, while they still are.

The derive stage sees a silence only when it ends (the next point makes device_offline and
device_online). A fleet manager wants to know while the tracker is silent, so a worker (the
one holding shard 0, every `telemetry.offline_sweep_s`) looks for devices whose last message
of any kind, heartbeats included, is older than their rules' `offline_after_s`, and stores the
same event the engine would derive later (`derive.offline`: same key, so it is stored once
and passed on once). `device_states.offline_at` marks a device reported: it is not looked at
again until its next point clears the mark.

Cost per sweep: one query over `last_positions` joined to `device_states` returning the small
columns of the devices silent past the shortest limit (no index on `last_message_at`, which
every message rewrites), then the states of at most `SWEEP_MAX` due devices.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import cast

import structlog
from sqlalchemy import Table, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from ctafleet.telematics.derive import DeviceState, Event, offline
from ctafleet.telematics.derive.rules import RulesSource
from ctafleet.telematics.ingest.writer import Contact, WriteResult
from ctafleet.telematics.models import DeviceDeriveState, LastPosition, TelemetryEvent

log = structlog.get_logger("ctafleet.offline")

SWEEP_EVERY_S = 60.0  # the default of telemetry.offline_sweep_s
# Devices looked at per sweep at most; the rest wait for the next sweep (oldest silence first).
SWEEP_MAX = 5000

_states = cast(Table, DeviceDeriveState.__table__)
_last = cast(Table, LastPosition.__table__)
_events = cast(Table, TelemetryEvent.__table__)


async def sweep(
    session: AsyncSession,
    *,
    now: datetime,
    rules_for: RulesSource,
    limit: int = SWEEP_MAX,
) -> WriteResult:
    """Stores device_offline for every silent device not yet reported; what it stored, as a
    batch's result for the after-commit stages (the live feed)."""
    s, lp = _states.c, _last.c
    await rules_for.refresh(session, None)
    cutoff = now - timedelta(seconds=rules_for.min_offline_after_s)
    # First the small columns of every device silent past the shortest limit, then each one's
    # own limit: a tenant that allows days of silence never holds up the others' reports.
    silent = (
        await session.execute(
            select(s.device_id, s.tenant_id, lp.vehicle_id, lp.last_message_at)
            .join(_last, lp.device_id == s.device_id)
            .where(s.offline_at.is_(None), lp.last_message_at < cutoff)
        )
    ).all()
    due = sorted(
        (
            row
            for row in silent
            if (now - row[3]).total_seconds() >= rules_for(row[1], row[2]).offline_after_s
        ),
        key=lambda row: row[3],
    )[:limit]  # the longest silences first; the rest at the next sweep
    if not due:
        return WriteResult()
    states = dict(
        (
            await session.execute(
                select(s.device_id, s.state).where(s.device_id.in_([row[0] for row in due]))
            )
        ).all()
    )
    found: dict[uuid.UUID, tuple[Contact, Event]] = {}
    marked: list[uuid.UUID] = []
    for device_id, tenant_id, vehicle_id, last_message_at in due:
        try:
            state = DeviceState.from_json(states[device_id])
        except (KeyError, ValueError):
            marked.append(device_id)  # unreadable: its next point starts it afresh (derived.py)
            continue
        # The engine's own event (keyed by the last point's time), so the point that ends the
        # silence derives the same one, which is then not stored or passed on again.
        events = offline(state, now=now, rules=rules_for(tenant_id, vehicle_id))
        if events:
            found[device_id] = (Contact(tenant_id, vehicle_id, last_message_at), events[0])
            marked.append(device_id)
    if marked:
        await session.execute(update(_states).where(s.device_id.in_(marked)).values(offline_at=now))
    result = WriteResult()
    if not found:
        return result
    dialect = (await session.connection()).dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    rows_out = [
        {
            "id": uuid.uuid4(),
            "tenant_id": contact.tenant_id,
            "device_id": device_id,
            "vehicle_id": contact.vehicle_id,
            "type": event.type,
            "time": event.time,
            "lat": event.lat,
            "lon": event.lon,
            "limit": event.limit,
            "key": event.key,
        }
        for device_id, (contact, event) in found.items()
    ]
    stmt = insert(_events).on_conflict_do_nothing(index_elements=["device_id", "key"])
    stored = {
        row[0] for row in await session.execute(stmt.returning(_events.c.device_id), rows_out)
    }
    for device_id in stored:
        contact, event = found[device_id]
        result.contacts[device_id] = contact
        result.events[device_id] = [event]
    if stored:
        log.info("devices_offline", devices=len(stored))
    return result


class OfflineSweep:
    """The worker's periodic job (see `Worker`): `sweep` with the derive stage's rules, every
    `every_s` (0: only when called)."""

    def __init__(self, rules_for: RulesSource, *, every_s: float = SWEEP_EVERY_S) -> None:
        self.rules_for = rules_for
        self.every_s = every_s

    async def __call__(self, session: AsyncSession, now: datetime) -> WriteResult:
        return await sweep(session, now=now, rules_for=self.rules_for)
