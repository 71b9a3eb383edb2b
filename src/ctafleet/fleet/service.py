"""Vehicles, drivers, assignments and telematics devices."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, exists, false, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.exc import StaleDataError

from ctafleet.api.problems import Problem, not_found
from ctafleet.audit import service as audit
from ctafleet.auth.deps import Actor
from ctafleet.auth.models import User
from ctafleet.auth.service import check_version
from ctafleet.auth.tokens import digest, new_secret
from ctafleet.db.tenancy import get_in_tenant
from ctafleet.fleet.models import Assignment, Device, Driver, Vehicle
from ctafleet.fleet.schemas import (
    AssignmentCreate,
    AssignmentUpdate,
    DeviceCreate,
    DeviceUpdate,
    DriverCreate,
    DriverUpdate,
    MeterReading,
    VehicleCreate,
    VehicleUpdate,
)
from ctafleet.fleet.vin import validate_vin

DEVICE_SECRET_PREFIX = "ctd"  # noqa: S105 - a prefix, not a secret


def _conflict(slug: str, detail: str, **extra: Any) -> Problem:
    return Problem(409, slug, detail, **extra)


Recheck = Callable[[], Awaitable[None]]


async def _write(
    session: AsyncSession,
    what: str,
    *,
    commit: bool = True,
    recheck: Recheck | None = None,
    if_match: int | None = None,
) -> None:
    """Flush (and commit); losing a race to a concurrent writer is a 409/412, never a 500.

    The uniqueness checks before a write cannot see a concurrent transaction's uncommitted row,
    so the database constraint has the last word; `recheck` then re-runs the checks against the
    committed winner to name the exact conflict.
    """
    try:
        if commit:
            await session.commit()
        else:
            await session.flush()
    except IntegrityError as exc:
        await session.rollback()
        if recheck is not None:
            await recheck()
        raise _conflict("duplicate", f"{what} conflicts with an existing record") from exc
    except StaleDataError as exc:
        await session.rollback()
        if if_match is not None:
            raise Problem(
                412,
                "precondition-failed",
                f"{what} changed while you were changing it; fetch it again and retry",
            ) from exc
        raise _conflict(
            "concurrent-update", f"{what} changed while you were changing it; retry"
        ) from exc


async def _lock(session: AsyncSession, obj: Any) -> None:
    """Read the row again under a lock held until commit, so that check-then-write sequences on
    it do not interleave.

    PostgreSQL locks the row (SELECT ... FOR UPDATE). SQLite has no row locks, and its driver
    opens a transaction only at the first write, so a no-op write takes the database's write
    lock. Take it after every check that may audit a cross-tenant probe: that audit is written
    from a second session, which would wait on this lock.
    """
    sqlite = session.get_bind().dialect.name == "sqlite"
    if sqlite:
        table = type(obj).__table__
        await session.execute(
            update(table)
            .where(table.c.id == obj.id)
            .values(version=table.c.version, updated_at=table.c.updated_at)
        )
    await session.refresh(obj, with_for_update=not sqlite)


# --- the driver's own records ------------------------------------------------------------


async def own_driver_id(session: AsyncSession, actor: Actor) -> uuid.UUID | None:
    if actor.user_id is None:
        return None
    return (
        await session.scalars(
            select(Driver.id).where(
                Driver.tenant_id == actor.tenant_id, Driver.user_id == actor.user_id
            )
        )
    ).first()


def _active_at(now: datetime) -> Any:
    return and_(
        Assignment.starts_at <= now, or_(Assignment.ends_at.is_(None), Assignment.ends_at > now)
    )


async def _restrict_own(
    session: AsyncSession, actor: Actor, stmt: Select[Any], model: type[Any], now: datetime
) -> Select[Any]:
    """For roles limited to their own records: only the linked driver's things."""
    if not actor.own_records_only:
        return stmt
    driver_id = await own_driver_id(session, actor)
    if driver_id is None:
        return stmt.where(false())
    if model is Driver:
        return stmt.where(Driver.id == driver_id)
    if model is Assignment:
        return stmt.where(Assignment.driver_id == driver_id)
    if model is Vehicle:
        return stmt.where(
            exists().where(
                Assignment.vehicle_id == Vehicle.id,
                Assignment.driver_id == driver_id,
                _active_at(now),
            )
        )
    return stmt.where(false())


async def _get_visible(
    session: AsyncSession,
    actor: Actor,
    model: type[Any],
    entity_id: uuid.UUID,
    entity: str,
    now: datetime,
) -> Any:
    obj = await get_in_tenant(session, actor, model, entity_id, entity=entity)
    if actor.own_records_only:
        stmt = await _restrict_own(
            session, actor, select(model.id).where(model.id == entity_id), model, now
        )
        if (await session.scalars(stmt)).first() is None:
            raise not_found(entity)
    return obj


# --- vehicles ----------------------------------------------------------------------------


def vehicles_query(
    actor: Actor,
    *,
    status: str | None = None,
    vehicle_type: str | None = None,
    department: str | None = None,
    fuel_type: str | None = None,
    make: str | None = None,
    q: str | None = None,
) -> Select[Vehicle]:
    stmt = select(Vehicle).where(Vehicle.tenant_id == actor.tenant_id)
    if status:
        stmt = stmt.where(Vehicle.status == status)
    if vehicle_type:
        stmt = stmt.where(Vehicle.vehicle_type == vehicle_type)
    if department:
        stmt = stmt.where(Vehicle.department == department)
    if fuel_type:
        stmt = stmt.where(Vehicle.fuel_type == fuel_type)
    if make:
        stmt = stmt.where(Vehicle.make == make)
    if q:
        pattern = q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        stmt = stmt.where(
            or_(
                Vehicle.unit_number.ilike(pattern, escape="\\"),
                Vehicle.plate.ilike(pattern, escape="\\"),
                Vehicle.vin.ilike(pattern, escape="\\"),
            )
        )
    return stmt


async def scoped(
    session: AsyncSession, actor: Actor, stmt: Select[Any], model: type[Any], now: datetime
) -> Select[Any]:
    return await _restrict_own(session, actor, stmt, model, now)


async def _unique_vehicle(
    session: AsyncSession,
    actor: Actor,
    vin: str,
    plate: str,
    jurisdiction: str,
    exclude: uuid.UUID | None = None,
) -> None:
    base = select(Vehicle.id).where(Vehicle.tenant_id == actor.tenant_id)
    if exclude:
        base = base.where(Vehicle.id != exclude)
    if (await session.scalars(base.where(Vehicle.vin == vin))).first():
        raise _conflict("duplicate-vin", f"a vehicle with VIN {vin} already exists")
    if (
        await session.scalars(
            base.where(Vehicle.plate == plate, Vehicle.plate_jurisdiction == jurisdiction)
        )
    ).first():
        raise _conflict("duplicate-plate", f"plate {plate} ({jurisdiction}) is already registered")


async def create_vehicle(session: AsyncSession, actor: Actor, data: VehicleCreate) -> Vehicle:
    values = data.model_dump()
    values["plate"] = values["plate"].upper()
    values["plate_jurisdiction"] = values["plate_jurisdiction"].upper()

    async def recheck() -> None:
        await _unique_vehicle(
            session, actor, values["vin"], values["plate"], values["plate_jurisdiction"]
        )

    await recheck()
    vehicle = Vehicle(tenant_id=actor.tenant_id, **values)
    session.add(vehicle)
    await _write(session, "the vehicle", commit=False, recheck=recheck)
    audit.record_created(session, actor, "vehicle", vehicle)
    await _write(session, "the vehicle", recheck=recheck)
    return vehicle


async def get_vehicle(
    session: AsyncSession, actor: Actor, vehicle_id: uuid.UUID, now: datetime
) -> Vehicle:
    vehicle: Vehicle = await _get_visible(session, actor, Vehicle, vehicle_id, "vehicle", now)
    return vehicle


async def update_vehicle(
    session: AsyncSession,
    actor: Actor,
    vehicle_id: uuid.UUID,
    data: VehicleUpdate,
    if_match: int | None,
) -> Vehicle:
    vehicle = await get_in_tenant(session, actor, Vehicle, vehicle_id, entity="vehicle")
    await _lock(session, vehicle)
    check_version(vehicle.version, if_match)
    changes = data.model_dump(exclude_unset=True)
    reason = changes.pop("meter_correction_reason", None)
    nullable = {
        "tank_capacity_l",
        "purchase_date",
        "purchase_cost_minor",
        "purchase_currency",
        "home_lat",
        "home_lon",
    }
    for key, value in changes.items():
        if value is None and key not in nullable:
            raise Problem(422, "validation-error", f"{key} cannot be null")
    before = audit.snapshot(vehicle)
    corrected = []
    for meter in ("odometer_m", "engine_hours_s"):
        if meter in changes and changes[meter] < getattr(vehicle, meter):
            if not reason:
                raise Problem(
                    422,
                    "meter-rollback",
                    f"{meter} cannot go backwards ({getattr(vehicle, meter)} → {changes[meter]}) "
                    "without meter_correction_reason",
                )
            corrected.append(meter)
    if "vin" in changes or "vin_nonstandard" in changes:
        nonstandard = changes.get("vin_nonstandard", vehicle.vin_nonstandard)
        try:
            changes["vin"] = validate_vin(changes.get("vin", vehicle.vin), nonstandard=nonstandard)
        except ValueError as exc:
            raise Problem(422, "invalid-vin", str(exc)) from exc
    for key in ("plate", "plate_jurisdiction"):
        if key in changes:
            changes[key] = changes[key].upper()
    merged = {**before, **changes}
    if merged["purchase_cost_minor"] is not None and merged["purchase_currency"] is None:
        raise Problem(
            422, "validation-error", "purchase_currency is required with purchase_cost_minor"
        )
    if (merged["home_lat"] is None) != (merged["home_lon"] is None):
        raise Problem(422, "validation-error", "home_lat and home_lon go together")

    async def recheck() -> None:
        await _unique_vehicle(
            session,
            actor,
            merged["vin"],
            merged["plate"],
            merged["plate_jurisdiction"],
            exclude=vehicle.id,
        )

    await recheck()
    for key, value in changes.items():
        setattr(vehicle, key, value)
    diff = audit.diff(before, audit.snapshot(vehicle))
    if corrected:
        diff["meter_correction_reason"] = {"before": None, "after": reason}
    audit.record(
        session,
        actor,
        action="meter_correction" if corrected else "update",
        entity_type="vehicle",
        entity_id=vehicle.id,
        changes=diff,
    )
    await _write(session, "the vehicle", recheck=recheck, if_match=if_match)
    return vehicle


async def record_meters(
    session: AsyncSession, actor: Actor, vehicle_id: uuid.UUID, data: MeterReading, now: datetime
) -> Vehicle:
    vehicle: Vehicle = await _get_visible(session, actor, Vehicle, vehicle_id, "vehicle", now)
    await _lock(session, vehicle)
    before = audit.snapshot(vehicle, ["odometer_m", "engine_hours_s"])
    for meter in ("odometer_m", "engine_hours_s"):
        value = getattr(data, meter)
        if value is None:
            continue
        if value < getattr(vehicle, meter):
            raise Problem(
                422,
                "meter-rollback",
                f"{meter} {value} is below the current {getattr(vehicle, meter)}; a correction "
                "needs PATCH with meter_correction_reason",
            )
        setattr(vehicle, meter, value)
    audit.record(
        session,
        actor,
        action="meter_reading",
        entity_type="vehicle",
        entity_id=vehicle.id,
        changes=audit.diff(before, audit.snapshot(vehicle, ["odometer_m", "engine_hours_s"])),
    )
    await _write(session, "the vehicle")
    return vehicle


# --- drivers -----------------------------------------------------------------------------


def drivers_query(
    actor: Actor,
    *,
    status: str | None = None,
    licence_expires_before: Any = None,
    q: str | None = None,
) -> Select[Driver]:
    stmt = select(Driver).where(Driver.tenant_id == actor.tenant_id)
    if status:
        stmt = stmt.where(Driver.status == status)
    if licence_expires_before:
        stmt = stmt.where(Driver.licence_expiry < licence_expires_before)
    if q:
        pattern = q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        stmt = stmt.where(
            or_(
                Driver.last_name.ilike(pattern, escape="\\"),
                Driver.first_name.ilike(pattern, escape="\\"),
                Driver.employee_number.ilike(pattern, escape="\\"),
            )
        )
    return stmt


async def _check_user_link(
    session: AsyncSession, actor: Actor, user_id: uuid.UUID | None, exclude: uuid.UUID | None = None
) -> None:
    if user_id is None:
        return
    await get_in_tenant(session, actor, User, user_id, entity="user")
    stmt = select(Driver.id).where(Driver.user_id == user_id)
    if exclude:
        stmt = stmt.where(Driver.id != exclude)
    if (await session.scalars(stmt)).first():
        raise _conflict("user-already-linked", "this user is already linked to another driver")


async def _unique_employee_number(
    session: AsyncSession, actor: Actor, number: str, exclude: uuid.UUID | None = None
) -> None:
    stmt = select(Driver.id).where(
        Driver.tenant_id == actor.tenant_id, Driver.employee_number == number
    )
    if exclude is not None:
        stmt = stmt.where(Driver.id != exclude)
    if (await session.scalars(stmt)).first():
        raise _conflict("duplicate-employee-number", f"employee number {number} is already used")


async def create_driver(session: AsyncSession, actor: Actor, data: DriverCreate) -> Driver:
    async def recheck() -> None:
        await _check_user_link(session, actor, data.user_id)
        await _unique_employee_number(session, actor, data.employee_number)

    await recheck()
    driver = Driver(tenant_id=actor.tenant_id, **data.model_dump())
    session.add(driver)
    await _write(session, "the driver", commit=False, recheck=recheck)
    audit.record_created(session, actor, "driver", driver)
    await _write(session, "the driver", recheck=recheck)
    return driver


async def get_driver(
    session: AsyncSession, actor: Actor, driver_id: uuid.UUID, now: datetime
) -> Driver:
    driver: Driver = await _get_visible(session, actor, Driver, driver_id, "driver", now)
    return driver


async def update_driver(
    session: AsyncSession,
    actor: Actor,
    driver_id: uuid.UUID,
    data: DriverUpdate,
    if_match: int | None,
) -> Driver:
    driver = await get_in_tenant(session, actor, Driver, driver_id, entity="driver")
    changes = data.model_dump(exclude_unset=True)
    for key, value in changes.items():
        if value is None and key not in ("email", "phone", "user_id"):
            raise Problem(422, "validation-error", f"{key} cannot be null")

    async def recheck() -> None:
        if "user_id" in changes:
            await _check_user_link(session, actor, changes["user_id"], exclude=driver.id)
        if "employee_number" in changes:
            await _unique_employee_number(
                session, actor, changes["employee_number"], exclude=driver.id
            )

    await recheck()
    await _lock(session, driver)
    check_version(driver.version, if_match)
    before = audit.snapshot(driver)
    for key, value in changes.items():
        setattr(driver, key, value)
    audit.record(
        session,
        actor,
        action="update",
        entity_type="driver",
        entity_id=driver.id,
        changes=audit.diff(before, audit.snapshot(driver)),
    )
    await _write(session, "the driver", recheck=recheck, if_match=if_match)
    return driver


# --- assignments -------------------------------------------------------------------------


def assignments_query(
    actor: Actor,
    *,
    vehicle_id: uuid.UUID | None = None,
    driver_id: uuid.UUID | None = None,
    active_at: datetime | None = None,
) -> Select[Assignment]:
    stmt = select(Assignment).where(Assignment.tenant_id == actor.tenant_id)
    if vehicle_id:
        stmt = stmt.where(Assignment.vehicle_id == vehicle_id)
    if driver_id:
        stmt = stmt.where(Assignment.driver_id == driver_id)
    if active_at:
        stmt = stmt.where(_active_at(active_at))
    return stmt


def _overlapping(
    column: Any,
    value: uuid.UUID,
    starts: datetime,
    ends: datetime | None,
    exclude: uuid.UUID | None,
) -> Select[Assignment]:
    stmt = select(Assignment).where(
        column == value,
        or_(Assignment.ends_at.is_(None), Assignment.ends_at > starts),
    )
    if ends is not None:
        stmt = stmt.where(Assignment.starts_at < ends)
    if exclude is not None:
        stmt = stmt.where(Assignment.id != exclude)
    return stmt.limit(1)


async def _check_overlap(
    session: AsyncSession,
    vehicle_id: uuid.UUID,
    driver_id: uuid.UUID,
    starts: datetime,
    ends: datetime | None,
    exclude: uuid.UUID | None = None,
) -> None:
    for column, value, what in (
        (Assignment.vehicle_id, vehicle_id, "vehicle"),
        (Assignment.driver_id, driver_id, "driver"),
    ):
        clash = (await session.scalars(_overlapping(column, value, starts, ends, exclude))).first()
        if clash is not None:
            raise _conflict(
                "assignment-overlap",
                f"the {what} already has an assignment in that period",
                conflicting_assignment_id=str(clash.id),
            )


async def create_assignment(
    session: AsyncSession, actor: Actor, data: AssignmentCreate
) -> Assignment:
    vehicle = await get_in_tenant(session, actor, Vehicle, data.vehicle_id, entity="vehicle")
    driver = await get_in_tenant(session, actor, Driver, data.driver_id, entity="driver")
    # Locks on both ends serialise concurrent assignments of the same vehicle or driver;
    # always vehicle first, then driver, so two requests never wait on each other in a cycle.
    await _lock(session, vehicle)
    await _lock(session, driver)
    if vehicle.status == "retired":
        raise _conflict("vehicle-retired", "a retired vehicle cannot be assigned")
    if driver.status != "active":
        raise _conflict("driver-not-active", f"the driver is {driver.status}")
    await _check_overlap(session, vehicle.id, driver.id, data.starts_at, data.ends_at)
    assignment = Assignment(tenant_id=actor.tenant_id, **data.model_dump())
    session.add(assignment)
    await session.flush()
    audit.record_created(session, actor, "assignment", assignment)
    await _write(session, "the assignment")
    return assignment


async def get_assignment(
    session: AsyncSession, actor: Actor, assignment_id: uuid.UUID, now: datetime
) -> Assignment:
    assignment: Assignment = await _get_visible(
        session, actor, Assignment, assignment_id, "assignment", now
    )
    return assignment


async def update_assignment(
    session: AsyncSession,
    actor: Actor,
    assignment_id: uuid.UUID,
    data: AssignmentUpdate,
    if_match: int | None,
) -> Assignment:
    assignment = await get_in_tenant(session, actor, Assignment, assignment_id, entity="assignment")
    changes = data.model_dump(exclude_unset=True)
    if "notes" in changes and changes["notes"] is None:
        raise Problem(422, "validation-error", "notes cannot be null")
    # The assignment first, then (as in create) its vehicle and driver.
    await _lock(session, assignment)
    check_version(assignment.version, if_match)
    before = audit.snapshot(assignment)
    if "ends_at" in changes:
        ends = changes["ends_at"]
        if ends is not None and ends <= assignment.starts_at:
            raise Problem(422, "validation-error", "ends_at must be after starts_at")
        for model, entity_id, entity in (
            (Vehicle, assignment.vehicle_id, "vehicle"),
            (Driver, assignment.driver_id, "driver"),
        ):
            await _lock(
                session, await get_in_tenant(session, actor, model, entity_id, entity=entity)
            )
        await _check_overlap(
            session,
            assignment.vehicle_id,
            assignment.driver_id,
            assignment.starts_at,
            ends,
            exclude=assignment.id,
        )
    for key, value in changes.items():
        setattr(assignment, key, value)
    audit.record(
        session,
        actor,
        action="update",
        entity_type="assignment",
        entity_id=assignment.id,
        changes=audit.diff(before, audit.snapshot(assignment)),
    )
    await _write(session, "the assignment", if_match=if_match)
    return assignment


async def delete_assignment(session: AsyncSession, actor: Actor, assignment_id: uuid.UUID) -> None:
    assignment = await get_in_tenant(session, actor, Assignment, assignment_id, entity="assignment")
    audit.record(
        session,
        actor,
        action="delete",
        entity_type="assignment",
        entity_id=assignment.id,
        changes=audit.diff(audit.snapshot(assignment), None),
    )
    await session.delete(assignment)
    await session.commit()


# --- devices -----------------------------------------------------------------------------


def devices_query(
    actor: Actor,
    *,
    vehicle_id: uuid.UUID | None = None,
    is_active: bool | None = None,
    protocol: str | None = None,
) -> Select[Device]:
    stmt = select(Device).where(Device.tenant_id == actor.tenant_id)
    if vehicle_id:
        stmt = stmt.where(Device.vehicle_id == vehicle_id)
    if is_active is not None:
        stmt = stmt.where(Device.is_active == is_active)
    if protocol:
        stmt = stmt.where(Device.protocol == protocol)
    return stmt


def _new_credential() -> tuple[str, str, str]:
    secret = new_secret(DEVICE_SECRET_PREFIX)
    return secret, digest(secret), secret[:10]


async def _unique_device(session: AsyncSession, unique_id: str) -> None:
    # Across all tenants: the id is how an incoming position finds its device.
    async with _system(session) as system:
        taken = (
            await system.scalars(select(Device.id).where(Device.unique_id == unique_id))
        ).first()
    if taken:
        raise _conflict("duplicate-device", f"a device with id {unique_id} is already registered")


async def create_device(
    session: AsyncSession, actor: Actor, data: DeviceCreate, now: datetime
) -> tuple[Device, str]:
    if data.vehicle_id is not None:
        await get_in_tenant(session, actor, Vehicle, data.vehicle_id, entity="vehicle")

    async def recheck() -> None:
        await _unique_device(session, data.unique_id)

    await recheck()
    secret, hashed, prefix = _new_credential()
    device = Device(
        tenant_id=actor.tenant_id,
        credential_hash=hashed,
        credential_prefix=prefix,
        credential_rotated_at=now,
        **data.model_dump(),
    )
    session.add(device)
    await _write(session, "the device", commit=False, recheck=recheck)
    audit.record_created(session, actor, "device", device)
    await _write(session, "the device", recheck=recheck)
    return device, secret


async def get_device(session: AsyncSession, actor: Actor, device_id: uuid.UUID) -> Device:
    return await get_in_tenant(session, actor, Device, device_id, entity="device")


async def update_device(
    session: AsyncSession,
    actor: Actor,
    device_id: uuid.UUID,
    data: DeviceUpdate,
    if_match: int | None,
) -> Device:
    device = await get_in_tenant(session, actor, Device, device_id, entity="device")
    changes = data.model_dump(exclude_unset=True)
    for key, value in changes.items():
        if value is None and key != "vehicle_id":
            raise Problem(422, "validation-error", f"{key} cannot be null")
    if changes.get("vehicle_id") is not None:
        await get_in_tenant(session, actor, Vehicle, changes["vehicle_id"], entity="vehicle")
    await _lock(session, device)
    check_version(device.version, if_match)
    before = audit.snapshot(device)
    for key, value in changes.items():
        setattr(device, key, value)
    audit.record(
        session,
        actor,
        action="update",
        entity_type="device",
        entity_id=device.id,
        changes=audit.diff(before, audit.snapshot(device)),
    )
    await _write(session, "the device", if_match=if_match)
    return device


async def rotate_device_credential(
    session: AsyncSession, actor: Actor, device_id: uuid.UUID, now: datetime
) -> tuple[Device, str]:
    device = await get_in_tenant(session, actor, Device, device_id, entity="device")
    await _lock(session, device)
    before = audit.snapshot(device)
    secret, hashed, prefix = _new_credential()
    device.credential_hash, device.credential_prefix, device.credential_rotated_at = (
        hashed,
        prefix,
        now,
    )
    audit.record(
        session,
        actor,
        action="rotate_credential",
        entity_type="device",
        entity_id=device.id,
        changes=audit.diff(before, audit.snapshot(device)),
    )
    await _write(session, "the device")
    return device, secret


async def authenticate_device(
    session: AsyncSession, unique_id: str, credential: str
) -> Device | None:
    """For ingest: the active device with this id and credential (system-scoped session)."""
    device = (await session.scalars(select(Device).where(Device.unique_id == unique_id))).first()
    if device is None or not device.is_active:
        return None
    if not secrets.compare_digest(device.credential_hash, digest(credential)):
        return None
    return device


def _system(session: AsyncSession) -> AsyncSession:
    from ctafleet.db.engine import SCOPE_KEY, SYSTEM_SCOPE

    return AsyncSession(bind=session.bind, info={SCOPE_KEY: SYSTEM_SCOPE})
