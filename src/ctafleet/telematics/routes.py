from __future__ import annotations

import asyncio
import contextlib
import uuid
from dataclasses import dataclass
from datetime import datetime

import orjson
from fastapi import APIRouter, Depends, Query, Request, Response, WebSocket
from starlette.websockets import WebSocketDisconnect

from ctafleet.api.etag import if_match_version, versioned
from ctafleet.api.pagination import ListParams, Page, Sorting, list_params, list_response
from ctafleet.api.problems import Problem
from ctafleet.api.state import AppState, get_state
from ctafleet.auth.deps import Ctx, admit, require, unauthorized
from ctafleet.auth.permissions import Permission
from ctafleet.db.toolkit import IfMatch
from ctafleet.fleet.vehicles.service import visible_ids
from ctafleet.kernel.context import Actor
from ctafleet.kernel.schemas import UtcDatetime
from ctafleet.observability.metrics import INGEST_POINTS
from ctafleet.telematics import live, policy, positions, service
from ctafleet.telematics.ingest import batch
from ctafleet.telematics.ingest.credentials import DEVICE_PREFIX, DeviceAuth
from ctafleet.telematics.ingest.queue import QueueFull, QueueUnavailable
from ctafleet.telematics.models import Device
from ctafleet.telematics.schemas import (
    BatchAccepted,
    DeviceCreate,
    DeviceRead,
    DeviceUpdate,
    DeviceWithCredential,
    IngestKey,
    LastPositionRead,
    PositionPage,
    PositionRead,
    RejectedPoint,
    Snapshot,
    TelemetryPolicyRead,
    TelemetryPolicyUpdate,
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


# --- positions -----------------------------------------------------------------------------

telemetry_router = APIRouter(tags=["telemetry"])
_user_writer = require(Permission.telemetry_write)


@dataclass
class TelemetryWriter:
    """Who sends a batch: a device with its own credential, or a user for the tenant."""

    device: DeviceAuth | None
    ctx: Ctx | None
    state: AppState


async def telemetry_writer(request: Request) -> TelemetryWriter:
    state = get_state(request)
    scheme, _, token = (request.headers.get("authorization") or "").partition(" ")
    token = token.strip()
    if scheme.lower() == "bearer" and token.startswith(DEVICE_PREFIX):
        device = await state.telemetry.auth.device(token, None)
        if device is None:
            INGEST_POINTS.labels("json", "rejected", "unauthorized").inc()
            raise unauthorized("unknown, wrong or revoked device credential")
        return TelemetryWriter(device=device, ctx=None, state=state)
    ctx = await _user_writer(request)
    return TelemetryWriter(device=None, ctx=ctx, state=state)


telemetry_writer.__permission__ = Permission.telemetry_write  # type: ignore[attr-defined]

_BATCH_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["points"],
                    "properties": {
                        "device": {"type": "string", "maxLength": 64},
                        "points": {"type": "array", "items": {"type": "object"}},
                    },
                }
            }
        },
    }
}


@telemetry_router.post(
    "/telemetry",
    response_model=BatchAccepted,
    status_code=202,
    summary="Send a batch of positions (device credential or a user with telemetry:write)",
    description=batch.__doc__,
    openapi_extra=_BATCH_SCHEMA,
)
async def send_batch(
    request: Request, writer: TelemetryWriter = Depends(telemetry_writer)
) -> BatchAccepted:
    state = writer.state
    body = await request.body()
    try:
        result = await positions.accept_batch(
            session=writer.ctx.session if writer.ctx else None,
            actor=writer.ctx.actor if writer.ctx else None,
            device=writer.device,
            queue=state.telemetry.queue,
            body=body,
            now=state.clock.now(),
            max_points=state.settings.telemetry.max_batch_points,
        )
    except batch.BatchError as exc:
        INGEST_POINTS.labels("json", "rejected", exc.reason).inc()
        raise Problem(400, f"telemetry-{exc.reason}", exc.detail) from exc
    except QueueFull as exc:
        raise Problem(
            503,
            "ingest-queue-full",
            "the ingest queue is full; retry later",
            headers={"Retry-After": str(exc.retry_after_s)},
        ) from exc
    except QueueUnavailable as exc:
        raise Problem(
            503,
            "ingest-unavailable",
            "the ingest queue is unavailable",
            headers={"Retry-After": "5"},
        ) from exc
    INGEST_POINTS.labels("json", "accepted", "").inc(result.accepted)
    for r in result.rejected:
        INGEST_POINTS.labels("json", "rejected", r.reason).inc()
    return BatchAccepted(
        accepted=result.accepted,
        rejected=[
            RejectedPoint(index=r.index, reason=r.reason, field=r.field) for r in result.rejected
        ],
    )


def _cursor(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


@telemetry_router.get(
    "/devices/{device_id}/positions",
    response_model=PositionPage,
    summary="A device's positions in a time range, oldest first",
)
async def device_positions(
    device_id: uuid.UUID,
    since: UtcDatetime | None = Query(None, description="From this time (inclusive)."),
    until: UtcDatetime | None = Query(None, description="Up to this time (inclusive)."),
    cursor: UtcDatetime | None = Query(None, description="`next_cursor` of the previous page."),
    limit: int = Query(1000, ge=1, le=positions.MAX_PAGE),
    ctx: Ctx = Depends(require(Permission.telemetry_read)),
) -> PositionPage:
    rows, after = await positions.device_positions(
        session=ctx.session,
        actor=ctx.actor,
        device_id=device_id,
        since=since,
        until=until,
        after=cursor,
        limit=limit,
    )
    return PositionPage(
        data=[PositionRead.model_validate(r) for r in rows], next_cursor=_cursor(after)
    )


@telemetry_router.get(
    "/vehicles/{vehicle_id}/position",
    response_model=LastPositionRead,
    summary="The vehicle's last known position",
    responses={404: {"description": "No such vehicle, or it has reported no fix yet."}},
)
async def vehicle_position(
    vehicle_id: uuid.UUID, ctx: Ctx = Depends(require(Permission.telemetry_read))
) -> LastPositionRead:
    row = await positions.vehicle_position(
        session=ctx.session, actor=ctx.actor, vehicle_id=vehicle_id
    )
    if row is None:
        raise Problem(404, "no-position", "the vehicle has reported no position yet")
    return LastPositionRead.model_validate(row)


@telemetry_router.get(
    "/telemetry/snapshot",
    response_model=Snapshot,
    summary="Every device's last position: the fleet map",
)
async def fleet_snapshot(
    vehicle_id: uuid.UUID | None = None,
    ctx: Ctx = Depends(require(Permission.telemetry_read)),
) -> Snapshot:
    rows = await positions.snapshot(session=ctx.session, actor=ctx.actor, vehicle_id=vehicle_id)
    return Snapshot(data=[LastPositionRead.model_validate(r) for r in rows])


# --- the tenant's telemetry policy ---------------------------------------------------------


@telemetry_router.get(
    "/telemetry/policy",
    response_model=TelemetryPolicyRead,
    summary="How long positions are kept, and whether an ingest key exists",
)
async def get_policy(
    request: Request, response: Response, ctx: Ctx = Depends(require(Permission.telemetry_read))
) -> object:
    found = await policy.get_policy(
        session=ctx.session,
        actor=ctx.actor,
        default_retention_days=get_state(request).settings.telemetry.retention_days,
    )
    return versioned(response, found)


@telemetry_router.patch(
    "/telemetry/policy",
    response_model=TelemetryPolicyRead,
    summary="Set how long positions are kept and the thresholds of trips and events",
)
async def update_policy(
    body: TelemetryPolicyUpdate,
    request: Request,
    response: Response,
    if_match: IfMatch | None = Depends(if_match_version),
    ctx: Ctx = Depends(require(Permission.telemetry_manage)),
) -> object:
    found = await policy.update_policy(
        session=ctx.session,
        actor=ctx.actor,
        retention_days=body.retention_days,
        rules=body.rules.model_dump(exclude_unset=True) if body.rules is not None else None,
        default_retention_days=get_state(request).settings.telemetry.retention_days,
        if_match=if_match,
    )
    return versioned(response, found)


@telemetry_router.post(
    "/telemetry/policy/ingest-key",
    response_model=IngestKey,
    status_code=201,
    summary="Create the tenant ingest key for id-only trackers (replaces the previous one)",
)
async def new_ingest_key(
    request: Request, ctx: Ctx = Depends(require(Permission.telemetry_manage))
) -> IngestKey:
    _, secret = await policy.new_ingest_key(
        session=ctx.session,
        actor=ctx.actor,
        default_retention_days=get_state(request).settings.telemetry.retention_days,
    )
    return IngestKey(ingest_key=secret, osmand_path=f"/ingest/osmand/{secret}")


@telemetry_router.delete(
    "/telemetry/policy/ingest-key",
    status_code=204,
    summary="Revoke the tenant ingest key: id-only trackers are refused from now on",
)
async def revoke_ingest_key(
    request: Request, ctx: Ctx = Depends(require(Permission.telemetry_manage))
) -> Response:
    await policy.revoke_ingest_key(
        session=ctx.session,
        actor=ctx.actor,
        default_retention_days=get_state(request).settings.telemetry.retention_days,
    )
    return Response(status_code=204)


# --- the live feed -------------------------------------------------------------------------

LIVE_AUTH_WAIT_S = 5.0
_REFUSALS = {401: 4401, 403: 4403, 429: live.SLOW}


def _protocol_token(websocket: WebSocket) -> str | None:
    """The token of `Sec-WebSocket-Protocol: bearer, <token>` (a browser can set this one)."""
    offered = [p.strip() for p in websocket.headers.get("sec-websocket-protocol", "").split(",")]
    if len(offered) >= 2 and offered[0].lower() == "bearer" and offered[1]:
        return offered[1]
    return None


async def _first_message_token(websocket: WebSocket) -> str | None:
    try:  # {"type": "auth", "token": "..."}
        first = orjson.loads(await asyncio.wait_for(websocket.receive_text(), LIVE_AUTH_WAIT_S))
    except (TimeoutError, ValueError, KeyError, WebSocketDisconnect):
        return None
    if isinstance(first, dict) and first.get("type") == "auth":
        value = first.get("token")
        return value if isinstance(value, str) and value else None
    return None


async def _live_access(
    websocket: WebSocket, token: str, wanted: frozenset[uuid.UUID], department: str | None
) -> tuple[Actor, frozenset[uuid.UUID] | None]:
    """The caller and the vehicles it may follow (None: all of its tenant), as every REST
    route would check them; `live.Refused` with the close code otherwise."""
    try:
        actor, session = await admit(websocket, Permission.telemetry_read, token)
    except Problem as exc:
        raise live.Refused(_REFUSALS.get(exc.status, 1011), (exc.detail or "")[:120]) from exc
    try:
        if not (wanted or department or actor.own_records_only):
            return actor, None
        # Resolved within the caller's tenant: another tenant's vehicle id matches nothing.
        vehicles = await visible_ids(session=session, actor=actor, department=department)
        return actor, (vehicles & wanted if wanted else vehicles)
    finally:
        await session.close()


async def _refuse(websocket: WebSocket, code: int, reason: str) -> None:
    with contextlib.suppress(RuntimeError, OSError, WebSocketDisconnect):  # it may have left
        await websocket.close(code, reason)


@telemetry_router.websocket("/live")
async def live_feed(websocket: WebSocket) -> None:
    """Positions and events of the caller's tenant as they are committed (see
    `ctafleet.telematics.live` and docs/telemetry-live.md for the messages and close codes)."""
    state = get_state(websocket)
    bearer = _protocol_token(websocket)
    await websocket.accept(subprotocol="bearer" if bearer else None)
    params = websocket.query_params
    token = params.get("token") or bearer or await _first_message_token(websocket)
    if not token:
        await _refuse(websocket, 4401, "an access token is required")
        return
    wanted: frozenset[uuid.UUID] = frozenset()
    types = frozenset(t for t in params.get("types", "positions,events").split(",") if t)
    bad_filter = not types or not types <= live.TYPES
    try:
        wanted = frozenset(uuid.UUID(v) for v in params.getlist("vehicle_id"))
    except ValueError:
        bad_filter = True
    department = params.get("department") or None
    try:
        # The token first: a caller without a valid one learns nothing, not even of its filters.
        actor, vehicles = await _live_access(
            websocket, token, wanted, None if bad_filter else department
        )
    except live.Refused as exc:
        await _refuse(websocket, exc.code, exc.reason)
        return
    if bad_filter:
        await _refuse(websocket, 4400, "vehicle_id is a UUID; types a list of positions, events")
        return

    async def recheck(client: live.LiveClient) -> frozenset[uuid.UUID] | None:
        again, allowed = await _live_access(websocket, client.token, wanted, department)
        if again.user_id != actor.user_id or again.tenant_id != actor.tenant_id:
            raise live.Refused(4401, "the new token is another user's")
        return allowed

    client = live.LiveClient(
        tenant_id=actor.tenant_id,
        vehicle_ids=vehicles,
        types=types,
        queue_size=state.settings.telemetry.live_client_queue,
        token=token,
    )
    telemetry = state.settings.telemetry
    await live.serve_client(
        websocket,
        state.telemetry.live,
        client,
        ping_s=telemetry.live_ping_s,
        recheck=recheck,
        recheck_s=telemetry.live_recheck_s,
    )
