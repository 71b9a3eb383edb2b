"""Vehicles: create, read, list, change, record meter readings."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Select, Table, bindparam, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ctafleet.db import toolkit
from ctafleet.db.toolkit import IfMatch
from ctafleet.fleet import visibility
from ctafleet.fleet.vehicles import models
from ctafleet.fleet.vehicles.models import Vehicle
from ctafleet.fleet.vehicles.schemas import MeterReading, VehicleCreate, VehicleUpdate
from ctafleet.fleet.vehicles.vin import validate_vin
from ctafleet.kernel.context import Actor
from ctafleet.kernel.errors import Conflict, Invalid

ENTITY = "vehicle"
METERS = ("odometer_m", "engine_hours_s")
NULLABLE = frozenset(
    {
        "tank_capacity_l",
        "purchase_date",
        "purchase_cost_minor",
        "purchase_currency",
        "home_lat",
        "home_lon",
    }
)


def prefix_pattern(q: str) -> str:
    """A LIKE pattern matching values that start with `q` (wildcards in `q` are literal)."""
    return q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def vehicles_query(
    *,
    status: Sequence[str] | None = None,
    vehicle_type: Sequence[str] | None = None,
    department: str | None = None,
    fuel_type: Sequence[str] | None = None,
    make: str | None = None,
    model: str | None = None,
    q: str | None = None,
) -> Select[Vehicle]:
    """Filters: any of several values for the enumerations; make, model and department match
    whatever their case (`ford` finds `Ford`)."""
    stmt = select(Vehicle)
    if status:
        stmt = stmt.where(Vehicle.status.in_(status))
    if vehicle_type:
        stmt = stmt.where(Vehicle.vehicle_type.in_(vehicle_type))
    if fuel_type:
        stmt = stmt.where(Vehicle.fuel_type.in_(fuel_type))
    for column, value in (
        (Vehicle.department, department),
        (Vehicle.make, make),
        (Vehicle.model, model),
    ):
        if value:
            stmt = stmt.where(func.lower(column) == value.lower())
    if q:
        pattern = prefix_pattern(q)
        stmt = stmt.where(
            or_(
                Vehicle.unit_number.ilike(pattern, escape="\\"),
                Vehicle.plate.ilike(pattern, escape="\\"),
                Vehicle.vin.ilike(pattern, escape="\\"),
            )
        )
    return stmt


async def list_query(*, session: AsyncSession, actor: Actor, **filters: Any) -> Select[Vehicle]:
    """The vehicles the actor may see, filtered."""
    return await visibility.restrict(session, actor, vehicles_query(**filters), Vehicle)


async def visible_ids(
    *, session: AsyncSession, actor: Actor, department: str | None = None
) -> frozenset[uuid.UUID]:
    """The ids of the vehicles of the actor's tenant it may see (of `department`, if given)."""
    stmt = await list_query(session=session, actor=actor, department=department)
    stmt = stmt.where(Vehicle.tenant_id == actor.tenant_id).with_only_columns(Vehicle.id)
    return frozenset(await session.scalars(stmt))


async def _unique(
    session: AsyncSession, vin: str, plate: str, jurisdiction: str, exclude: uuid.UUID | None
) -> None:
    base = select(Vehicle.id)
    if exclude:
        base = base.where(Vehicle.id != exclude)
    if (await session.scalars(base.where(Vehicle.vin == vin))).first():
        raise Conflict("duplicate-vin", f"a vehicle with VIN {vin} already exists")
    if (
        await session.scalars(
            base.where(Vehicle.plate == plate, Vehicle.plate_jurisdiction == jurisdiction)
        )
    ).first():
        raise Conflict("duplicate-plate", f"plate {plate} ({jurisdiction}) is already registered")


def _checked_vin(vin: str, nonstandard: bool) -> str:
    try:
        return validate_vin(vin, nonstandard=nonstandard)
    except ValueError as exc:
        raise Invalid("vin", str(exc), slug="invalid-vin") from exc


async def create_vehicle(*, session: AsyncSession, actor: Actor, data: VehicleCreate) -> Vehicle:
    values = data.model_dump()
    values["vin"] = _checked_vin(values["vin"], values["vin_nonstandard"])
    values["plate"] = values["plate"].upper()
    values["plate_jurisdiction"] = values["plate_jurisdiction"].upper()

    async def recheck() -> None:
        await _unique(session, values["vin"], values["plate"], values["plate_jurisdiction"], None)

    await recheck()
    vehicle = Vehicle(**values)
    await toolkit.create(session, actor, vehicle, entity=ENTITY, recheck=recheck, commit_now=False)
    if vehicle.odometer_m or vehicle.engine_hours_s:
        # The meters it arrives with start its history.
        first = models.MeterReading(
            vehicle_id=vehicle.id,
            read_at=actor.now(),
            odometer_m=vehicle.odometer_m,
            engine_hours_s=vehicle.engine_hours_s,
            source="manual",
            note="at registration",
            recorded_by=actor.user_id,
        )
        session.add(first)
    await toolkit.commit(session, what="the vehicle", recheck=recheck)
    return vehicle


async def get_vehicle(
    *, session: AsyncSession, actor: Actor, vehicle_id: uuid.UUID, for_update: bool = False
) -> Vehicle:
    """A vehicle the actor may see (`for_update`: locked until commit)."""
    vehicle = await toolkit.get(session, actor, Vehicle, vehicle_id, entity=ENTITY)
    await visibility.check_visible(session, actor, Vehicle, vehicle_id, ENTITY)
    if for_update:
        await toolkit.lock(session, vehicle)
    return vehicle


async def update_vehicle(
    *,
    session: AsyncSession,
    actor: Actor,
    vehicle_id: uuid.UUID,
    data: VehicleUpdate,
    if_match: IfMatch | None,
) -> Vehicle:
    vehicle = await toolkit.get(session, actor, Vehicle, vehicle_id, entity=ENTITY, for_update=True)
    toolkit.check_version(vehicle.version, if_match)
    changes = data.model_dump(exclude_unset=True)
    reason = changes.pop("meter_correction_reason", None)
    corrects = changes.pop("corrects_reading_id", None)
    if corrects is not None and not reason:
        raise Invalid(
            "corrects_reading_id", "corrects_reading_id goes with meter_correction_reason"
        )
    for key, value in changes.items():
        if value is None and key not in NULLABLE:
            raise Invalid(key, f"{key} cannot be null")
    corrected = []
    for meter in METERS:
        if meter in changes and changes[meter] < getattr(vehicle, meter):
            if not reason:
                raise Invalid(
                    meter,
                    f"{meter} cannot go backwards ({getattr(vehicle, meter)} → {changes[meter]}) "
                    "without meter_correction_reason",
                    slug="meter-rollback",
                )
            corrected.append(meter)
    if "vin" in changes or "vin_nonstandard" in changes:
        nonstandard = changes.get("vin_nonstandard", vehicle.vin_nonstandard)
        changes["vin"] = _checked_vin(changes.get("vin", vehicle.vin), nonstandard)
    for key in ("plate", "plate_jurisdiction"):
        if key in changes:
            changes[key] = changes[key].upper()
    merged = {
        key: changes.get(key, getattr(vehicle, key))
        for key in (
            "vin",
            "plate",
            "plate_jurisdiction",
            "purchase_cost_minor",
            "purchase_currency",
            "home_lat",
            "home_lon",
        )
    }
    if merged["purchase_cost_minor"] is not None and merged["purchase_currency"] is None:
        raise Invalid("purchase_currency", "purchase_currency is required with purchase_cost_minor")
    if (merged["home_lat"] is None) != (merged["home_lon"] is None):
        raise Invalid("home_lat", "home_lat and home_lon go together")

    async def recheck() -> None:
        await _unique(
            session, merged["vin"], merged["plate"], merged["plate_jurisdiction"], vehicle.id
        )

    await recheck()
    if corrected:
        await _record_correction(session, actor, vehicle, changes, reason or "", corrects)
    return await toolkit.update(
        session,
        actor,
        vehicle,
        changes,
        entity=ENTITY,
        if_match=if_match,
        action="meter_correction" if corrected else "update",
        note={"meter_correction_reason": reason} if corrected else None,
        recheck=recheck,
    )


FUTURE_SKEW = timedelta(minutes=5)  # a device clock slightly ahead is not a future reading


def readings_query(*, vehicle_id: uuid.UUID) -> Select[models.MeterReading]:
    return select(models.MeterReading).where(models.MeterReading.vehicle_id == vehicle_id)


async def _neighbours(
    session: AsyncSession, vehicle_id: uuid.UUID, meter: str, at: datetime, since: datetime | None
) -> tuple[int | None, int | None]:
    """The highest value of `meter` read before `at`, and the lowest read after it, among the
    readings since the last correction (a correction restarts the history it is held to)."""
    column = getattr(models.MeterReading, meter)
    base = select(column).where(
        models.MeterReading.vehicle_id == vehicle_id,
        column.is_not(None),
        models.MeterReading.source != "correction",
    )
    if since is not None:
        base = base.where(models.MeterReading.read_at > since)
    before = await session.scalar(
        base.where(models.MeterReading.read_at <= at).order_by(column.desc()).limit(1)
    )
    after = await session.scalar(
        base.where(models.MeterReading.read_at > at).order_by(column.asc()).limit(1)
    )
    return before, after


async def _record_correction(
    session: AsyncSession,
    actor: Actor,
    vehicle: Vehicle,
    changes: dict[str, Any],
    reason: str,
    corrects: uuid.UUID | None,
) -> None:
    if corrects is not None:
        fixed = await toolkit.get(
            session, actor, models.MeterReading, corrects, entity="meter reading"
        )
        if fixed.vehicle_id != vehicle.id:
            raise Invalid("corrects_reading_id", "that reading is of another vehicle")
    correction = models.MeterReading(
        vehicle_id=vehicle.id,
        read_at=actor.now(),
        odometer_m=changes.get("odometer_m"),
        engine_hours_s=changes.get("engine_hours_s"),
        source="correction",
        corrects_id=corrects,
        note=reason,
        recorded_by=actor.user_id,
    )
    await toolkit.create(session, actor, correction, entity="meter_reading", commit_now=False)


async def record_meters(
    *, session: AsyncSession, actor: Actor, vehicle_id: uuid.UUID, data: MeterReading
) -> Vehicle:
    """A reading, kept in the vehicle's meter history. Meters only go forward in time: a value
    below one read earlier (or above one read later) is refused; a correction is an update
    with a reason. The vehicle's meters follow its latest reading."""
    vehicle = await get_vehicle(
        session=session, actor=actor, vehicle_id=vehicle_id, for_update=True
    )
    now = actor.now()
    read_at = data.read_at or now
    if read_at > now + FUTURE_SKEW:
        raise Invalid("read_at", "read_at is in the future", slug="validation-error")
    history = select(func.max(models.MeterReading.read_at)).where(
        models.MeterReading.vehicle_id == vehicle.id
    )
    latest = await session.scalar(history)
    corrected_at = await session.scalar(history.where(models.MeterReading.source == "correction"))
    if corrected_at is not None and read_at < corrected_at:
        raise Invalid(
            "read_at",
            f"the meters were corrected at {corrected_at.isoformat()}; a reading from before "
            "then cannot be added",
            slug="meter-rollback",
        )
    is_latest = latest is None or read_at >= latest
    changes: dict[str, int] = {}
    for meter in METERS:
        value = getattr(data, meter)
        if value is None:
            continue
        before, after = await _neighbours(session, vehicle.id, meter, read_at, corrected_at)
        floor = max(
            v for v in (before, getattr(vehicle, meter) if is_latest else None, 0) if v is not None
        )
        if value < floor:
            raise Invalid(
                meter,
                f"{meter} {value} is below the {floor} already read; a correction needs PATCH "
                "with meter_correction_reason",
                slug="meter-rollback",
            )
        if after is not None and value > after:
            raise Invalid(
                meter,
                f"{meter} {value} is above the {after} read later; check read_at",
                slug="meter-rollback",
            )
        if is_latest:
            changes[meter] = value
    reading = models.MeterReading(
        vehicle_id=vehicle.id,
        read_at=read_at,
        odometer_m=data.odometer_m,
        engine_hours_s=data.engine_hours_s,
        source=data.source,
        note=data.note,
        recorded_by=actor.user_id,
    )
    await toolkit.create(session, actor, reading, entity="meter_reading", commit_now=False)
    await toolkit.update(session, actor, vehicle, changes, entity=ENTITY, action="meter_reading")
    await toolkit.commit(session, what="the reading")
    return vehicle


_vehicles = cast(Table, Vehicle.__table__)
_TELEMETRY_METERS = (
    update(_vehicles)
    .where(_vehicles.c.id == bindparam("b_id"), _vehicles.c.tenant_id == bindparam("b_tenant"))
    .values(
        odometer_m=_vehicles.c.odometer_m + bindparam("b_odometer"),
        engine_hours_s=_vehicles.c.engine_hours_s + bindparam("b_engine"),
        # Not an edit: no new version (an ETag changing with every batch would make every
        # If-Match stale) and no new updated_at.
        updated_at=_vehicles.c.updated_at,
    )
)


async def add_telemetry_meters(
    *, session: AsyncSession, increments: Mapping[tuple[uuid.UUID, uuid.UUID], tuple[int, int]]
) -> None:
    """Move vehicles' odometer and engine hours forward by what telemetry measured.

    `increments`: (tenant id, vehicle id) -> (metres, seconds) since the last batch. For the
    ingest worker's system session, inside its batch transaction; negative increments are
    ignored, so telemetry never winds a meter back (a correction is a user's PATCH)."""
    rows = [
        {"b_id": vehicle, "b_tenant": tenant, "b_odometer": max(0, m), "b_engine": max(0, s)}
        for (tenant, vehicle), (m, s) in increments.items()
        if m > 0 or s > 0
    ]
    if rows:
        await session.execute(_TELEMETRY_METERS, rows)
