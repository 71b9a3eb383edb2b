from __future__ import annotations

import uuid

from fastapi import APIRouter, Depends, Query, Response

from ctafleet.api.etag import if_match_version, versioned
from ctafleet.api.filters import any_of, values
from ctafleet.api.pagination import ListParams, Page, Sorting, list_params, list_response
from ctafleet.auth.deps import Ctx, require
from ctafleet.auth.permissions import Permission
from ctafleet.db.toolkit import IfMatch
from ctafleet.fleet import imports
from ctafleet.fleet.import_routes import add_import_route
from ctafleet.fleet.vehicles import service
from ctafleet.fleet.vehicles.models import MeterReading as MeterReadingRow
from ctafleet.fleet.vehicles.models import Vehicle
from ctafleet.fleet.vehicles.schemas import (
    FuelType,
    MeterReading,
    MeterReadingRead,
    VehicleCreate,
    VehicleRead,
    VehicleStatus,
    VehicleType,
    VehicleUpdate,
)

router = APIRouter(prefix="/vehicles", tags=["vehicles"])

SORTING = Sorting(
    fields={
        "unit_number": Vehicle.unit_number,
        "plate": Vehicle.plate,
        "vin": Vehicle.vin,
        "make": Vehicle.make,
        "model": Vehicle.model,
        "year": Vehicle.year,
        "vehicle_type": Vehicle.vehicle_type,
        "department": Vehicle.department,
        "status": Vehicle.status,
        "fuel_type": Vehicle.fuel_type,
        "odometer_m": Vehicle.odometer_m,
        "engine_hours_s": Vehicle.engine_hours_s,
        "created_at": Vehicle.created_at,
        "updated_at": Vehicle.updated_at,
    },
    default="unit_number",
    tiebreak=Vehicle.id,
)


@router.get(
    "",
    response_model=Page[VehicleRead],
    summary="List vehicles",
    description=f"Sortable by: {SORTING.describe()}. `q` matches the start of "
    "unit number, plate or VIN.",
)
async def list_vehicles(
    status: str | None = any_of(VehicleStatus),
    vehicle_type: str | None = any_of(VehicleType),
    department: str | None = Query(None, max_length=100, description="Any case."),
    fuel_type: str | None = any_of(FuelType),
    make: str | None = Query(None, max_length=64, description="Any case."),
    model: str | None = Query(None, max_length=64, description="Any case."),
    q: str | None = Query(None, min_length=1, max_length=32),
    params: ListParams = Depends(list_params),
    ctx: Ctx = Depends(require(Permission.vehicles_read)),
) -> object:
    stmt = await service.list_query(
        session=ctx.session,
        actor=ctx.actor,
        status=values(status),
        vehicle_type=values(vehicle_type),
        department=department,
        fuel_type=values(fuel_type),
        make=make,
        model=model,
        q=q,
    )
    return await list_response(ctx.session, stmt, params, SORTING, VehicleRead, "vehicles.csv")


@router.post("", response_model=VehicleRead, status_code=201, summary="Add a vehicle")
async def create_vehicle(
    body: VehicleCreate, response: Response, ctx: Ctx = Depends(require(Permission.vehicles_write))
) -> Vehicle:
    vehicle = await service.create_vehicle(session=ctx.session, actor=ctx.actor, data=body)
    response.headers["Location"] = f"/api/v1/vehicles/{vehicle.id}"
    return versioned(response, vehicle)


add_import_route(
    router,
    plural="vehicles",
    key="vin",
    permission=Permission.vehicles_write,
    run=imports.import_vehicles,
)


@router.get("/{vehicle_id}", response_model=VehicleRead, summary="Read a vehicle")
async def get_vehicle(
    vehicle_id: uuid.UUID, response: Response, ctx: Ctx = Depends(require(Permission.vehicles_read))
) -> Vehicle:
    vehicle = await service.get_vehicle(session=ctx.session, actor=ctx.actor, vehicle_id=vehicle_id)
    return versioned(response, vehicle)


@router.patch(
    "/{vehicle_id}",
    response_model=VehicleRead,
    summary="Change a vehicle (lowering a meter needs meter_correction_reason)",
)
async def update_vehicle(
    vehicle_id: uuid.UUID,
    body: VehicleUpdate,
    response: Response,
    if_match: IfMatch | None = Depends(if_match_version),
    ctx: Ctx = Depends(require(Permission.vehicles_write)),
) -> Vehicle:
    vehicle = await service.update_vehicle(
        session=ctx.session, actor=ctx.actor, vehicle_id=vehicle_id, data=body, if_match=if_match
    )
    return versioned(response, vehicle)


READING_SORTING = Sorting(
    fields={"read_at": MeterReadingRow.read_at, "created_at": MeterReadingRow.created_at},
    default="-read_at",
    tiebreak=MeterReadingRow.id,
)


@router.get(
    "/{vehicle_id}/meters",
    response_model=Page[MeterReadingRead],
    summary="The vehicle's meter readings, newest first, with their source and corrections",
    description=f"Sortable by: {READING_SORTING.describe()}.",
)
async def list_meters(
    vehicle_id: uuid.UUID,
    params: ListParams = Depends(list_params),
    ctx: Ctx = Depends(require(Permission.vehicles_read)),
) -> object:
    await service.get_vehicle(session=ctx.session, actor=ctx.actor, vehicle_id=vehicle_id)
    stmt = service.readings_query(vehicle_id=vehicle_id)
    return await list_response(
        ctx.session, stmt, params, READING_SORTING, MeterReadingRead, "meter-readings.csv"
    )


@router.post(
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
    vehicle = await service.record_meters(
        session=ctx.session, actor=ctx.actor, vehicle_id=vehicle_id, data=body
    )
    return versioned(response, vehicle)
