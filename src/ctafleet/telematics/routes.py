from __future__ import annotations

import uuid

from fastapi import APIRouter, Depends, Query, Response

from ctafleet.api.etag import if_match_version, versioned
from ctafleet.api.pagination import ListParams, Page, Sorting, list_params, list_response
from ctafleet.auth.deps import Ctx, require
from ctafleet.auth.permissions import Permission
from ctafleet.db.toolkit import IfMatch
from ctafleet.telematics import service
from ctafleet.telematics.models import Device
from ctafleet.telematics.schemas import (
    DeviceCreate,
    DeviceRead,
    DeviceUpdate,
    DeviceWithCredential,
)

router = APIRouter(prefix="/devices", tags=["devices"])

SORTING = Sorting(
    fields={"unique_id": Device.unique_id, "name": Device.name, "created_at": Device.created_at},
    default="unique_id",
    tiebreak=Device.id,
)


def _with_credential(device: Device, secret: str) -> DeviceWithCredential:
    return DeviceWithCredential.model_validate(
        {**DeviceRead.model_validate(device).model_dump(), "credential": secret}
    )


@router.get(
    "",
    response_model=Page[DeviceRead],
    summary="List telematics devices",
    description=f"Sortable by: {SORTING.describe()}.",
)
async def list_devices(
    vehicle_id: uuid.UUID | None = None,
    is_active: bool | None = None,
    protocol: str | None = Query(None, pattern="^(osmand|json|mqtt)$"),
    params: ListParams = Depends(list_params),
    ctx: Ctx = Depends(require(Permission.devices_read)),
) -> object:
    stmt = service.devices_query(vehicle_id=vehicle_id, is_active=is_active, protocol=protocol)
    return await list_response(ctx.session, stmt, params, SORTING, DeviceRead, "devices.csv")


@router.post(
    "",
    response_model=DeviceWithCredential,
    status_code=201,
    summary="Register a device; the response holds its credential, shown only once",
)
async def create_device(
    body: DeviceCreate, response: Response, ctx: Ctx = Depends(require(Permission.devices_manage))
) -> DeviceWithCredential:
    device, secret = await service.create_device(session=ctx.session, actor=ctx.actor, data=body)
    response.headers["Location"] = f"/api/v1/devices/{device.id}"
    versioned(response, device)
    return _with_credential(device, secret)


@router.get("/{device_id}", response_model=DeviceRead, summary="Read a device")
async def get_device(
    device_id: uuid.UUID, response: Response, ctx: Ctx = Depends(require(Permission.devices_read))
) -> Device:
    device = await service.get_device(session=ctx.session, actor=ctx.actor, device_id=device_id)
    return versioned(response, device)


@router.patch(
    "/{device_id}",
    response_model=DeviceRead,
    summary="Rename, (un)bind to a vehicle, or deactivate a device",
)
async def update_device(
    device_id: uuid.UUID,
    body: DeviceUpdate,
    response: Response,
    if_match: IfMatch | None = Depends(if_match_version),
    ctx: Ctx = Depends(require(Permission.devices_manage)),
) -> Device:
    device = await service.update_device(
        session=ctx.session, actor=ctx.actor, device_id=device_id, data=body, if_match=if_match
    )
    return versioned(response, device)


@router.post(
    "/{device_id}/rotate-credential",
    response_model=DeviceWithCredential,
    summary="Replace the device's credential; the old one stops working at once",
)
async def rotate_credential(
    device_id: uuid.UUID,
    response: Response,
    ctx: Ctx = Depends(require(Permission.devices_manage)),
) -> DeviceWithCredential:
    device, secret = await service.rotate_credential(
        session=ctx.session, actor=ctx.actor, device_id=device_id
    )
    versioned(response, device)
    return _with_credential(device, secret)
