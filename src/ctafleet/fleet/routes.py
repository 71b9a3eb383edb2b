from __future__ import annotations

import uuid
from datetime import date

from fastapi import APIRouter, Depends, Query, Response

from ctafleet.api.etag import if_match_version, set_etag
from ctafleet.api.pagination import (
    ListParams,
    Page,
    Sorting,
    list_params,
    list_response,
)
from ctafleet.auth.deps import Ctx, require
from ctafleet.auth.permissions import Permission
from ctafleet.fleet import service
from ctafleet.fleet.models import Assignment, Device, Driver, Vehicle
from ctafleet.fleet.schemas import (
    AssignmentCreate,
    AssignmentRead,
    AssignmentUpdate,
    DeviceCreate,
    DeviceRead,
    DeviceUpdate,
    DeviceWithCredential,
    DriverCreate,
    DriverRead,
    DriverStatus,
    DriverUpdate,
    FuelType,
    MeterReading,
    UtcDatetime,
    VehicleCreate,
    VehicleRead,
    VehicleStatus,
    VehicleType,
    VehicleUpdate,
)

vehicles = APIRouter(prefix="/vehicles", tags=["vehicles"])
drivers = APIRouter(prefix="/drivers", tags=["drivers"])
assignments = APIRouter(prefix="/assignments", tags=["assignments"])
devices = APIRouter(prefix="/devices", tags=["devices"])
routers = (vehicles, drivers, assignments, devices)

VEHICLE_SORTING = Sorting(
    fields={
        "unit_number": Vehicle.unit_number,
        "plate": Vehicle.plate,
        "year": Vehicle.year,
        "status": Vehicle.status,
        "odometer_m": Vehicle.odometer_m,
        "created_at": Vehicle.created_at,
        "updated_at": Vehicle.updated_at,
    },
    default="unit_number",
    tiebreak=Vehicle.id,
)
DRIVER_SORTING = Sorting(
    fields={
        "last_name": Driver.last_name,
        "employee_number": Driver.employee_number,
        "licence_expiry": Driver.licence_expiry,
        "created_at": Driver.created_at,
    },
    default="last_name",
    tiebreak=Driver.id,
)
ASSIGNMENT_SORTING = Sorting(
    fields={"starts_at": Assignment.starts_at, "created_at": Assignment.created_at},
    default="-starts_at",
    tiebreak=Assignment.id,
)
DEVICE_SORTING = Sorting(
    fields={"unique_id": Device.unique_id, "created_at": Device.created_at},
    default="unique_id",
    tiebreak=Device.id,
)


# --- vehicles ----------------------------------------------------------------------------


@vehicles.get(
    "",
    response_model=Page[VehicleRead],
    summary="List vehicles",
    description=f"Sortable by: {VEHICLE_SORTING.describe()}. `q` matches the start of "
    "unit number, plate or VIN.",
)
async def list_vehicles(
    status: VehicleStatus | None = None,
    vehicle_type: VehicleType | None = None,
    department: str | None = Query(None, max_length=100),
    fuel_type: FuelType | None = None,
    make: str | None = Query(None, max_length=64),
    q: str | None = Query(None, min_length=1, max_length=32),
    params: ListParams = Depends(list_params),
    ctx: Ctx = Depends(require(Permission.vehicles_read)),
) -> object:
    stmt = service.vehicles_query(
        ctx.actor,
        status=status,
        vehicle_type=vehicle_type,
        department=department,
        fuel_type=fuel_type,
        make=make,
        q=q,
    )
    stmt = await service.scoped(ctx.session, ctx.actor, stmt, Vehicle, ctx.now)
    return await list_response(
        ctx.session, stmt, params, VEHICLE_SORTING, VehicleRead, "vehicles.csv"
    )


@vehicles.post("", response_model=VehicleRead, status_code=201, summary="Add a vehicle")
async def create_vehicle(
    body: VehicleCreate, response: Response, ctx: Ctx = Depends(require(Permission.vehicles_write))
) -> Vehicle:
    vehicle = await service.create_vehicle(ctx.session, ctx.actor, body)
    set_etag(response, vehicle.version)
    response.headers["Location"] = f"/api/v1/vehicles/{vehicle.id}"
    return vehicle


@vehicles.get("/{vehicle_id}", response_model=VehicleRead, summary="Read a vehicle")
async def get_vehicle(
    vehicle_id: uuid.UUID, response: Response, ctx: Ctx = Depends(require(Permission.vehicles_read))
) -> Vehicle:
    vehicle = await service.get_vehicle(ctx.session, ctx.actor, vehicle_id, ctx.now)
    set_etag(response, vehicle.version)
    return vehicle


@vehicles.patch(
    "/{vehicle_id}",
    response_model=VehicleRead,
    summary="Change a vehicle (lowering a meter needs meter_correction_reason)",
)
async def update_vehicle(
    vehicle_id: uuid.UUID,
    body: VehicleUpdate,
    response: Response,
    if_match: int | None = Depends(if_match_version),
    ctx: Ctx = Depends(require(Permission.vehicles_write)),
) -> Vehicle:
    vehicle = await service.update_vehicle(ctx.session, ctx.actor, vehicle_id, body, if_match)
    set_etag(response, vehicle.version)
    return vehicle


@vehicles.post(
    "/{vehicle_id}/meters",
    response_model=VehicleRead,
    summary="Record odometer / engine-hour readings (never lower than the current)",
)
async def record_meters(
    vehicle_id: uuid.UUID,
    body: MeterReading,
    response: Response,
    ctx: Ctx = Depends(require(Permission.vehicles_meters)),
) -> Vehicle:
    vehicle = await service.record_meters(ctx.session, ctx.actor, vehicle_id, body, ctx.now)
    set_etag(response, vehicle.version)
    return vehicle


# --- drivers -----------------------------------------------------------------------------


@drivers.get(
    "",
    response_model=Page[DriverRead],
    summary="List drivers",
    description=f"Sortable by: {DRIVER_SORTING.describe()}.",
)
async def list_drivers(
    status: DriverStatus | None = None,
    licence_expires_before: date | None = None,
    q: str | None = Query(None, min_length=1, max_length=100),
    params: ListParams = Depends(list_params),
    ctx: Ctx = Depends(require(Permission.drivers_read)),
) -> object:
    stmt = service.drivers_query(
        ctx.actor, status=status, licence_expires_before=licence_expires_before, q=q
    )
    stmt = await service.scoped(ctx.session, ctx.actor, stmt, Driver, ctx.now)
    return await list_response(ctx.session, stmt, params, DRIVER_SORTING, DriverRead, "drivers.csv")


@drivers.post("", response_model=DriverRead, status_code=201, summary="Add a driver")
async def create_driver(
    body: DriverCreate, response: Response, ctx: Ctx = Depends(require(Permission.drivers_write))
) -> Driver:
    driver = await service.create_driver(ctx.session, ctx.actor, body)
    set_etag(response, driver.version)
    response.headers["Location"] = f"/api/v1/drivers/{driver.id}"
    return driver


@drivers.get("/{driver_id}", response_model=DriverRead, summary="Read a driver")
async def get_driver(
    driver_id: uuid.UUID, response: Response, ctx: Ctx = Depends(require(Permission.drivers_read))
) -> Driver:
    driver = await service.get_driver(ctx.session, ctx.actor, driver_id, ctx.now)
    set_etag(response, driver.version)
    return driver


@drivers.patch("/{driver_id}", response_model=DriverRead, summary="Change a driver")
async def update_driver(
    driver_id: uuid.UUID,
    body: DriverUpdate,
    response: Response,
    if_match: int | None = Depends(if_match_version),
    ctx: Ctx = Depends(require(Permission.drivers_write)),
) -> Driver:
    driver = await service.update_driver(ctx.session, ctx.actor, driver_id, body, if_match)
    set_etag(response, driver.version)
    return driver


# --- assignments -------------------------------------------------------------------------


@assignments.get(
    "",
    response_model=Page[AssignmentRead],
    summary="List assignments",
    description=f"Sortable by: {ASSIGNMENT_SORTING.describe()}.",
)
async def list_assignments(
    vehicle_id: uuid.UUID | None = None,
    driver_id: uuid.UUID | None = None,
    active_at: UtcDatetime | None = Query(None, description="Only those active at this time."),
    params: ListParams = Depends(list_params),
    ctx: Ctx = Depends(require(Permission.assignments_read)),
) -> object:
    stmt = service.assignments_query(
        ctx.actor, vehicle_id=vehicle_id, driver_id=driver_id, active_at=active_at
    )
    stmt = await service.scoped(ctx.session, ctx.actor, stmt, Assignment, ctx.now)
    return await list_response(
        ctx.session, stmt, params, ASSIGNMENT_SORTING, AssignmentRead, "assignments.csv"
    )


@assignments.post(
    "",
    response_model=AssignmentRead,
    status_code=201,
    summary="Assign a driver to a vehicle (no overlaps for either)",
)
async def create_assignment(
    body: AssignmentCreate,
    response: Response,
    ctx: Ctx = Depends(require(Permission.assignments_write)),
) -> Assignment:
    assignment = await service.create_assignment(ctx.session, ctx.actor, body)
    set_etag(response, assignment.version)
    response.headers["Location"] = f"/api/v1/assignments/{assignment.id}"
    return assignment


@assignments.get("/{assignment_id}", response_model=AssignmentRead, summary="Read an assignment")
async def get_assignment(
    assignment_id: uuid.UUID,
    response: Response,
    ctx: Ctx = Depends(require(Permission.assignments_read)),
) -> Assignment:
    assignment = await service.get_assignment(ctx.session, ctx.actor, assignment_id, ctx.now)
    set_etag(response, assignment.version)
    return assignment


@assignments.patch(
    "/{assignment_id}",
    response_model=AssignmentRead,
    summary="End an assignment or change its notes",
)
async def update_assignment(
    assignment_id: uuid.UUID,
    body: AssignmentUpdate,
    response: Response,
    if_match: int | None = Depends(if_match_version),
    ctx: Ctx = Depends(require(Permission.assignments_write)),
) -> Assignment:
    assignment = await service.update_assignment(
        ctx.session, ctx.actor, assignment_id, body, if_match
    )
    set_etag(response, assignment.version)
    return assignment


@assignments.delete("/{assignment_id}", status_code=204, summary="Delete an assignment")
async def delete_assignment(
    assignment_id: uuid.UUID, ctx: Ctx = Depends(require(Permission.assignments_write))
) -> Response:
    await service.delete_assignment(ctx.session, ctx.actor, assignment_id)
    return Response(status_code=204)


# --- devices -----------------------------------------------------------------------------


@devices.get(
    "",
    response_model=Page[DeviceRead],
    summary="List telematics devices",
    description=f"Sortable by: {DEVICE_SORTING.describe()}.",
)
async def list_devices(
    vehicle_id: uuid.UUID | None = None,
    is_active: bool | None = None,
    protocol: str | None = Query(None, pattern="^(osmand|json|mqtt)$"),
    params: ListParams = Depends(list_params),
    ctx: Ctx = Depends(require(Permission.devices_read)),
) -> object:
    stmt = service.devices_query(
        ctx.actor, vehicle_id=vehicle_id, is_active=is_active, protocol=protocol
    )
    return await list_response(ctx.session, stmt, params, DEVICE_SORTING, DeviceRead, "devices.csv")


@devices.post(
    "",
    response_model=DeviceWithCredential,
    status_code=201,
    summary="Register a device; the response holds its credential, shown only once",
)
async def create_device(
    body: DeviceCreate, response: Response, ctx: Ctx = Depends(require(Permission.devices_manage))
) -> DeviceWithCredential:
    device, secret = await service.create_device(ctx.session, ctx.actor, body, ctx.now)
    set_etag(response, device.version)
    response.headers["Location"] = f"/api/v1/devices/{device.id}"
    return DeviceWithCredential.model_validate(
        {**DeviceRead.model_validate(device).model_dump(), "credential": secret}
    )


@devices.get("/{device_id}", response_model=DeviceRead, summary="Read a device")
async def get_device(
    device_id: uuid.UUID, response: Response, ctx: Ctx = Depends(require(Permission.devices_read))
) -> Device:
    device = await service.get_device(ctx.session, ctx.actor, device_id)
    set_etag(response, device.version)
    return device


@devices.patch(
    "/{device_id}",
    response_model=DeviceRead,
    summary="Rename, (un)bind to a vehicle, or deactivate a device",
)
async def update_device(
    device_id: uuid.UUID,
    body: DeviceUpdate,
    response: Response,
    if_match: int | None = Depends(if_match_version),
    ctx: Ctx = Depends(require(Permission.devices_manage)),
) -> Device:
    device = await service.update_device(ctx.session, ctx.actor, device_id, body, if_match)
    set_etag(response, device.version)
    return device


@devices.post(
    "/{device_id}/rotate-credential",
    response_model=DeviceWithCredential,
    summary="Replace the device's credential; the old one stops working at once",
)
async def rotate_credential(
    device_id: uuid.UUID,
    response: Response,
    ctx: Ctx = Depends(require(Permission.devices_manage)),
) -> DeviceWithCredential:
    device, secret = await service.rotate_device_credential(
        ctx.session, ctx.actor, device_id, ctx.now
    )
    set_etag(response, device.version)
    return DeviceWithCredential.model_validate(
        {**DeviceRead.model_validate(device).model_dump(), "credential": secret}
    )
