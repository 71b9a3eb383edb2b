"""The worker's derive stage: each committed batch's new points into trips, stops, events, the
device's derive state and the vehicle's meters, in the batch's transaction (see `worker`).

Exactly once: the writer reports only the points stored for the first time, so a redelivered
batch derives nothing, and a failed batch rolls back what was derived with its points.

Late points (older than what the device's state has seen) replay: from the newest trip
checkpoint before the earliest of them (or from the device's first point), what was derived
after the checkpoint is deleted and derived again from the stored positions. The engine is
split-invariant, so the result is what in-order arrival would have given, event keys included.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import structlog
from sqlalchemy import Table, and_, delete, func, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from ctafleet.fleet.vehicles.service import add_telemetry_meters
from ctafleet.telematics.derive import (
    Advance,
    DeviceState,
    Event,
    GeofenceSet,
    Rules,
    Stop,
    Trip,
    advance,
)
from ctafleet.telematics.derive.rules import DefaultRules, RulesSource
from ctafleet.telematics.geofences.models import GeofenceRow
from ctafleet.telematics.geofences.service import engine_geofence
from ctafleet.telematics.ingest.writer import WriteResult
from ctafleet.telematics.models import (
    Device,
    DeviceDeriveState,
    Position,
    StopRow,
    TelemetryEvent,
    TripRow,
)
from ctafleet.telematics.points import Point

log = structlog.get_logger("ctafleet.derive")

_states = cast(Table, DeviceDeriveState.__table__)
_trips = cast(Table, TripRow.__table__)
_stops = cast(Table, StopRow.__table__)
_events = cast(Table, TelemetryEvent.__table__)
_positions = cast(Table, Position.__table__)
_geofences = cast(Table, GeofenceRow.__table__)

# Positions read per query during a replay (the engine continues across pages).
REPLAY_PAGE = 5000
# Tenants whose geofences are kept in memory at most (least recently used go first).
GEOFENCE_CACHE_TENANTS = 1000


_UNSET = uuid.UUID(int=0)


def _dt(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


@dataclass
class _Derived:
    """What one device's new points produced, to be written."""

    state: DeviceState
    # Set by the caller, who knows the device's contact.
    device_id: uuid.UUID = _UNSET
    tenant_id: uuid.UUID = _UNSET
    vehicle_id: uuid.UUID | None = None
    trips: list[Trip] = field(default_factory=list)
    stops: list[Stop] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    # Events to pass on (a replay re-derives events already passed on: those are left out).
    fresh: list[Event] = field(default_factory=list)
    # Whole metres and seconds the vehicle's meters move by, if this device feeds them.
    odometer_m: int = 0
    engine_s: int = 0
    feeds_meters: bool = True


class GeofenceCache:
    """Each tenant's active geofences as a `GeofenceSet`, rebuilt only when they changed.

    Every batch asks the database for a fingerprint of its tenants' geofences (count, newest
    change, sum of versions: one grouped query), so a change made through the API in any
    process applies from the next batch on, with no stale window to wait out."""

    def __init__(self, max_tenants: int = GEOFENCE_CACHE_TENANTS) -> None:
        self.max_tenants = max_tenants
        self._sets: dict[uuid.UUID, tuple[tuple[Any, ...], GeofenceSet]] = {}

    async def sets(
        self, session: AsyncSession, tenants: Iterable[uuid.UUID]
    ) -> dict[uuid.UUID, GeofenceSet]:
        wanted = sorted(set(tenants))
        if not wanted:
            return {}
        g = _geofences.c
        stmt = (
            select(g.tenant_id, func.count(), func.max(g.updated_at), func.sum(g.version))
            .where(g.tenant_id.in_(wanted))
            .group_by(g.tenant_id)
        )
        prints = {row[0]: tuple(row[1:]) for row in await session.execute(stmt)}
        out: dict[uuid.UUID, GeofenceSet] = {}
        stale = []
        for tenant in wanted:
            fingerprint = prints.get(tenant, (0, None, None))
            cached = self._sets.pop(tenant, None)
            if cached is not None and cached[0] == fingerprint:
                self._sets[tenant] = cached  # most recently used last
                out[tenant] = cached[1]
            elif fingerprint[0] == 0:
                self._remember(tenant, fingerprint, GeofenceSet(()))
                out[tenant] = self._sets[tenant][1]
            else:
                stale.append((tenant, fingerprint))
        if stale:
            rows = await session.execute(
                select(GeofenceRow).where(
                    GeofenceRow.tenant_id.in_([t for t, _ in stale]), GeofenceRow.active.is_(True)
                )
            )
            by_tenant: dict[uuid.UUID, list[Any]] = {t: [] for t, _ in stale}
            for (row,) in rows:
                try:
                    by_tenant[row.tenant_id].append(engine_geofence(row))
                except ValueError as exc:  # validated on the way in: only a hand-edited row
                    log.warning("geofence_unusable", geofence_id=str(row.id), error=str(exc))
            for tenant, fingerprint in stale:
                self._remember(tenant, fingerprint, GeofenceSet(by_tenant[tenant]))
                out[tenant] = self._sets[tenant][1]
        return out

    def _remember(self, tenant: uuid.UUID, fingerprint: tuple[Any, ...], gset: GeofenceSet) -> None:
        self._sets[tenant] = (fingerprint, gset)
        while len(self._sets) > self.max_tenants:
            del self._sets[next(iter(self._sets))]


class DeriveStage:
    """The in-batch stage (`runtime.stages` puts it after `tracking.apply`)."""

    def __init__(self, *, rules_for: RulesSource | None = None) -> None:
        self.rules_for: RulesSource = rules_for or DefaultRules()
        self.geofences = GeofenceCache()

    async def __call__(self, session: AsyncSession, result: WriteResult, now: datetime) -> None:
        devices = [d for d, points in result.new_points.items() if points]
        if not devices:
            return
        started = time.perf_counter()
        stored = await _load_states(session, devices)
        tenants = {result.contacts[d].tenant_id for d in devices}
        await self.rules_for.refresh(session, tenants)
        silent_meters = set(
            await session.scalars(
                select(Device.id).where(Device.id.in_(devices), Device.feeds_meters.is_(False))
            )
        )
        sets = await self.geofences.sets(session, tenants)
        derived: list[_Derived] = []
        for device_id in devices:
            contact = result.contacts[device_id]
            points = result.new_points[device_id]
            rules = self.rules_for(contact.tenant_id, contact.vehicle_id)
            gset = sets[contact.tenant_id]
            before = stored.get(device_id)
            if (
                before is not None
                and before.last_t is not None
                and (points[0].fix_time.timestamp() <= before.last_t)
            ):
                out = await _replay(session, device_id, before, points, rules, gset)
            else:
                run = advance(before, points, rules=rules, geofences=gset)
                out = _Derived(state=run.state, trips=run.trips, stops=run.stops, events=run.events)
                out.fresh = run.events
            out.device_id, out.tenant_id, out.vehicle_id = (
                device_id,
                contact.tenant_id,
                contact.vehicle_id,
            )
            # Whole units of the running totals: rounding each batch's share would drift.
            odometer, engine = (before.odometer_m, before.engine_s) if before else (0.0, 0.0)
            out.odometer_m = round(out.state.odometer_m) - round(odometer)
            out.engine_s = round(out.state.engine_s) - round(engine)
            out.feeds_meters = device_id not in silent_meters
            derived.append(out)
        new_keys = await _write(session, derived, now)
        for out in derived:
            # Only events stored now are passed on: the offline sweep may have reported the
            # device_offline that ends a silence before its next point derived it again.
            fresh = [e for e in out.fresh if (out.device_id, e.key) in new_keys]
            if fresh:
                result.events[out.device_id] = fresh
        log.debug(
            "derived",
            devices=len(derived),
            events=sum(len(o.events) for o in derived),
            ms=round((time.perf_counter() - started) * 1000, 1),
        )


async def _load_states(
    session: AsyncSession, devices: Sequence[uuid.UUID]
) -> dict[uuid.UUID, DeviceState]:
    out: dict[uuid.UUID, DeviceState] = {}
    stmt = select(_states.c.device_id, _states.c.state).where(_states.c.device_id.in_(devices))
    for device_id, data in await session.execute(stmt):
        try:
            out[device_id] = DeviceState.from_json(data)
        except ValueError as exc:
            # Another version's state (or a damaged one): the device starts afresh.
            log.warning("derive_state_unreadable", device_id=str(device_id), error=str(exc))
    return out


def _point(uid: str, row: Any) -> Point:
    return Point(
        device_uid=uid,
        fix_time=row.fix_time,
        lat=row.lat,
        lon=row.lon,
        valid=row.valid,
        server_time=row.server_time,
        speed_mps=row.speed_mps,
        course_deg=row.course_deg,
        altitude_m=row.altitude_m,
        accuracy_m=row.accuracy_m,
        hdop=row.hdop,
        battery_pct=row.battery_pct,
        charging=row.charging,
        ignition=row.ignition,
        odometer_m=row.odometer_m,
        driver_unique_id=row.driver_unique_id,
        attributes=dict(row.attributes or {}),
    )


async def _replay(
    session: AsyncSession,
    device_id: uuid.UUID,
    current: DeviceState,
    points: Sequence[Point],
    rules: Rules,
    gset: GeofenceSet,
) -> _Derived:
    """Derive again from the newest checkpoint before the earliest new point."""
    earliest = points[0].fix_time
    t = _trips.c
    found = (
        await session.execute(
            select(t.state_after, t.checkpoint_at, t.end_time)
            .where(t.device_id == device_id, t.checkpoint_at < earliest)
            .order_by(t.checkpoint_at.desc())
            .limit(1)
        )
    ).first()
    start: DeviceState | None = None
    if found is not None:
        try:
            start = DeviceState.from_json(found.state_after)
        except ValueError:
            start = None
    if start is None or found is None:
        await _forget(session, device_id, None, None, None)
        deleted_keys = await _forget_events(session, device_id, None)
        after: datetime | None = None
    else:
        cp_t = found.checkpoint_at
        await _forget(session, device_id, cp_t, found.end_time, start)
        deleted_keys = await _forget_events(session, device_id, (cp_t, start))
        after = cp_t
    uid = start.device_uid if start is not None else current.device_uid
    state = start
    trips: list[Trip] = []
    stops: list[Stop] = []
    events: list[Event] = []
    p = _positions.c
    while True:
        stmt = select(_positions).where(p.device_id == device_id)
        if after is not None:
            stmt = stmt.where(p.fix_time > after)
        rows = (await session.execute(stmt.order_by(p.fix_time).limit(REPLAY_PAGE))).all()
        if not rows:
            break
        run: Advance = advance(state, [_point(uid, r) for r in rows], rules=rules, geofences=gset)
        state = run.state
        trips += run.trips
        stops += run.stops
        events += run.events
        after = rows[-1].fix_time
        if len(rows) < REPLAY_PAGE:
            break
    if state is None:  # no position at all: cannot happen, the new points are stored
        raise RuntimeError(f"replay of device {device_id}: no stored positions")
    log.info("derive_replayed", device_id=str(device_id), from_checkpoint=found is not None)
    return _Derived(
        state=state,
        trips=trips,
        stops=stops,
        events=events,
        fresh=[e for e in events if e.key not in deleted_keys],
    )


async def _forget(
    session: AsyncSession,
    device_id: uuid.UUID,
    cp_t: datetime | None,
    cp_trip_end: datetime | None,
    cp_state: DeviceState | None,
) -> None:
    """Delete the trips closed and the stops reported after the checkpoint (all: None)."""
    trips = delete(_trips).where(_trips.c.device_id == device_id)
    stops = delete(_stops).where(_stops.c.device_id == device_id)
    if cp_t is not None:
        trips = trips.where(_trips.c.checkpoint_at > cp_t)
        # The stop after the checkpoint's trip begins where that trip ended; earlier ones
        # were reported when the trip was confirmed, before its checkpoint.
        stops = stops.where(_stops.c.start_time >= cp_trip_end)
    await session.execute(trips)
    await session.execute(stops)


async def _forget_events(
    session: AsyncSession, device_id: uuid.UUID, checkpoint: tuple[datetime, DeviceState] | None
) -> set[str]:
    """Delete the events derived after the checkpoint (all: None); their keys.

    Events carry the time they happened, not when they were derived: all those after the
    checkpoint's time, and the episodes in progress at the checkpoint (idle, overspeed), which
    are reported when they end, with their start as their time."""
    e = _events.c
    stmt = delete(_events).where(e.device_id == device_id)
    if checkpoint is not None:
        cp_t, s = checkpoint
        later = [e.time > cp_t]
        if s.idle_t is not None:
            later.append(and_(e.type == "idle", e.time >= _dt(s.idle_t)))
        if s.over_t is not None:
            later.append(and_(e.type == "overspeed", e.time >= _dt(s.over_t)))
        stmt = stmt.where(or_(*later))
    result = await session.execute(stmt.returning(e.key))
    return {row[0] for row in result}


async def _write(
    session: AsyncSession, derived: list[_Derived], now: datetime
) -> set[tuple[uuid.UUID, str]]:
    """Writes what was derived; the (device, key) of each event stored for the first time."""
    dialect = (await session.connection()).dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    trips, stops, events, states = [], [], [], []
    meters: dict[tuple[uuid.UUID, uuid.UUID], tuple[int, int]] = {}
    for out in derived:
        head = {"tenant_id": out.tenant_id, "device_id": out.device_id}
        with_vehicle = {**head, "vehicle_id": out.vehicle_id}
        for trip in out.trips:
            row = {k: v for k, v in trip.as_dict().items() if k != "device_uid"}
            row.update(start_time=trip.start_time, end_time=trip.end_time)
            assert trip.state_after is not None  # closed trips carry their checkpoint
            checkpoint_t = trip.state_after["last_t"]
            trips.append(
                {
                    **with_vehicle,
                    **row,
                    "id": uuid.uuid4(),
                    "state_after": trip.state_after,
                    "checkpoint_at": _dt(checkpoint_t),
                }
            )
        for stop in out.stops:
            stops.append(
                {
                    **with_vehicle,
                    "id": uuid.uuid4(),
                    "start_time": stop.start_time,
                    "end_time": stop.end_time,
                    "lat": stop.lat,
                    "lon": stop.lon,
                    "duration_s": stop.duration_s,
                }
            )
        for event in out.events:
            events.append(
                {
                    **with_vehicle,
                    "id": uuid.uuid4(),
                    "type": event.type,
                    "time": event.time,
                    "lat": event.lat,
                    "lon": event.lon,
                    "value": event.value,
                    "duration_s": event.duration_s,
                    "limit": event.limit,
                    "geofence_id": event.geofence_id,
                    "key": event.key,
                }
            )
        states.append({**head, "state": out.state.to_json(), "updated_at": now})
        if out.vehicle_id is not None and out.feeds_meters:
            key = (out.tenant_id, out.vehicle_id)
            m, s = meters.get(key, (0, 0))
            meters[key] = (m + max(0, out.odometer_m), s + max(0, out.engine_s))
    # Idempotent on the natural keys: a replay that meets a row it left in place keeps it.
    for table, rows, keys in (
        (_trips, trips, ["device_id", "start_time"]),
        (_stops, stops, ["device_id", "start_time"]),
    ):
        if rows:
            stmt = insert(table).on_conflict_do_nothing(index_elements=keys)
            await session.execute(stmt, rows)
    stored: set[tuple[uuid.UUID, str]] = set()
    if events:
        stmt = insert(_events).on_conflict_do_nothing(index_elements=["device_id", "key"])
        returned = await session.execute(stmt.returning(_events.c.device_id, _events.c.key), events)
        stored = {(row[0], row[1]) for row in returned}
    upsert = insert(_states)
    upsert = upsert.on_conflict_do_update(
        index_elements=[_states.c.device_id],
        set_={
            "state": upsert.excluded.state,
            "updated_at": upsert.excluded.updated_at,
            "offline_at": None,  # a point came: the next silence is reported again
        },
    )
    await session.execute(upsert, states)
    if meters:
        await add_telemetry_meters(session=session, increments=meters)
    return stored
