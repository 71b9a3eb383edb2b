"""Vehicles: create, read, list, change, record meter readings."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from ctafleet.db import toolkit
from ctafleet.db.toolkit import IfMatch
from ctafleet.fleet import visibility
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
    return await toolkit.create(session, actor, vehicle, entity=ENTITY, recheck=recheck)


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


async def record_meters(
    *, session: AsyncSession, actor: Actor, vehicle_id: uuid.UUID, data: MeterReading
) -> Vehicle:
    """A reading: meters only go forward here (a correction is an update with a reason)."""
    vehicle = await get_vehicle(
        session=session, actor=actor, vehicle_id=vehicle_id, for_update=True
    )
    changes: dict[str, int] = {}
    for meter in METERS:
        value = getattr(data, meter)
        if value is None:
            continue
        if value < getattr(vehicle, meter):
            raise Invalid(
                meter,
                f"{meter} {value} is below the current {getattr(vehicle, meter)}; a correction "
                "needs PATCH with meter_correction_reason",
                slug="meter-rollback",
            )
        changes[meter] = value
    return await toolkit.update(
        session, actor, vehicle, changes, entity=ENTITY, action="meter_reading"
    )
