from __future__ import annotations

import uuid
from datetime import date

from fastapi import APIRouter, Depends, Query, Response

from ctafleet.api.etag import if_match_version, versioned
from ctafleet.api.filters import any_of, values
from ctafleet.api.pagination import ListParams, Page, Sorting, list_params, list_response
from ctafleet.auth.deps import Ctx, require
from ctafleet.auth.permissions import Permission
from ctafleet.db.toolkit import IfMatch
from ctafleet.fleet import imports
from ctafleet.fleet.drivers import service
from ctafleet.fleet.drivers.models import Driver
from ctafleet.fleet.drivers.schemas import DriverCreate, DriverRead, DriverStatus, DriverUpdate
from ctafleet.fleet.import_routes import add_import_route

router = APIRouter(prefix="/drivers", tags=["drivers"])

SORTING = Sorting(
    fields={
        "last_name": Driver.last_name,
        "first_name": Driver.first_name,
        "status": Driver.status,
        "employee_number": Driver.employee_number,
        "licence_expiry": Driver.licence_expiry,
        "created_at": Driver.created_at,
    },
    default="last_name",
    tiebreak=Driver.id,
)


@router.get(
    "",
    response_model=Page[DriverRead],
    summary="List drivers",
    description=f"Sortable by: {SORTING.describe()}.",
)
async def list_drivers(
    status: str | None = any_of(DriverStatus),
    licence_expires_before: date | None = None,
    q: str | None = Query(None, min_length=1, max_length=100),
    params: ListParams = Depends(list_params),
    ctx: Ctx = Depends(require(Permission.drivers_read)),
) -> object:
    stmt = await service.list_query(
        session=ctx.session,
        actor=ctx.actor,
        status=values(status),
        licence_expires_before=licence_expires_before,
        q=q,
    )
    return await list_response(ctx.session, stmt, params, SORTING, DriverRead, "drivers.csv")


@router.post("", response_model=DriverRead, status_code=201, summary="Add a driver")
async def create_driver(
    body: DriverCreate, response: Response, ctx: Ctx = Depends(require(Permission.drivers_write))
) -> Driver:
    driver = await service.create_driver(session=ctx.session, actor=ctx.actor, data=body)
    response.headers["Location"] = f"/api/v1/drivers/{driver.id}"
    return versioned(response, driver)


add_import_route(
    router,
    plural="drivers",
    key="employee_number",
    permission=Permission.drivers_write,
    run=imports.import_drivers,
)


@router.get("/{driver_id}", response_model=DriverRead, summary="Read a driver")
async def get_driver(
    driver_id: uuid.UUID, response: Response, ctx: Ctx = Depends(require(Permission.drivers_read))
) -> Driver:
    driver = await service.get_driver(session=ctx.session, actor=ctx.actor, driver_id=driver_id)
    return versioned(response, driver)


@router.patch("/{driver_id}", response_model=DriverRead, summary="Change a driver")
async def update_driver(
    driver_id: uuid.UUID,
    body: DriverUpdate,
    response: Response,
    if_match: IfMatch | None = Depends(if_match_version),
    ctx: Ctx = Depends(require(Permission.drivers_write)),
) -> Driver:
    driver = await service.update_driver(
        session=ctx.session, actor=ctx.actor, driver_id=driver_id, data=body, if_match=if_match
    )
    return versioned(response, driver)
