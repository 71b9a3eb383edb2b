from __future__ import annotations

import uuid
from typing import Literal

import orjson
from fastapi import APIRouter, Depends, Query, Response

from ctafleet.api.filters import any_of, values
from ctafleet.api.pagination import ListParams, Page, Sorting, list_params, list_response
from ctafleet.auth.deps import Ctx, require
from ctafleet.auth.permissions import Permission
from ctafleet.kernel.schemas import UtcDatetime
from ctafleet.telematics.derive import EventType, track
from ctafleet.telematics.history import service
from ctafleet.telematics.history.schemas import EventRead, TripRead
from ctafleet.telematics.models import TelemetryEvent, TripRow

router = APIRouter(tags=["telemetry"])

TRIP_SORTING = Sorting(
    fields={
        "start_time": TripRow.start_time,
        "distance_m": TripRow.distance_m,
        "duration_s": TripRow.duration_s,
    },
    default="-start_time",
    tiebreak=TripRow.id,
)
EVENT_SORTING = Sorting(
    fields={"time": TelemetryEvent.time}, default="-time", tiebreak=TelemetryEvent.id
)
_SINCE = Query(None, description="From this time (inclusive).")
_UNTIL = Query(None, description="Up to this time (inclusive).")


@router.get(
    "/vehicles/{vehicle_id}/trips",
    response_model=Page[TripRead],
    summary="The vehicle's trips that overlap the range, newest first",
    description=f"Sortable by: {TRIP_SORTING.describe()}.",
)
async def vehicle_trips(
    vehicle_id: uuid.UUID,
    since: UtcDatetime | None = _SINCE,
    until: UtcDatetime | None = _UNTIL,
    params: ListParams = Depends(list_params),
    ctx: Ctx = Depends(require(Permission.telemetry_read)),
) -> object:
    stmt = await service.trips_query(
        session=ctx.session, actor=ctx.actor, vehicle_id=vehicle_id, since=since, until=until
    )
    return await list_response(ctx.session, stmt, params, TRIP_SORTING, TripRead, "trips.csv")


@router.get(
    "/telemetry/events",
    response_model=Page[EventRead],
    summary="Derived events (overspeed, idle, geofences, ...), newest first",
    description=f"Sortable by: {EVENT_SORTING.describe()}.",
)
async def list_events(
    vehicle_id: uuid.UUID | None = None,
    device_id: uuid.UUID | None = None,
    type: str | None = any_of(EventType),
    since: UtcDatetime | None = _SINCE,
    until: UtcDatetime | None = _UNTIL,
    params: ListParams = Depends(list_params),
    ctx: Ctx = Depends(require(Permission.telemetry_read)),
) -> object:
    stmt = service.events_query(
        vehicle_id=vehicle_id, device_id=device_id, types=values(type), since=since, until=until
    )
    return await list_response(ctx.session, stmt, params, EVENT_SORTING, EventRead, "events.csv")


_MEDIA = {
    "geojson": "application/geo+json",
    "gpx": "application/gpx+xml",
    "csv": "text/csv; charset=utf-8",
}


@router.get(
    "/devices/{device_id}/track",
    summary="The device's track in a range as GeoJSON, GPX or CSV",
    description="Without `since`, the day before `until` (default: now). Ranges over an hour "
    f"are simplified to {track.DEFAULT_TOLERANCE_M:g} m unless `simplify` says otherwise "
    f"(`0`: every position). At most {service.MAX_TRACK_POINTS} stored positions per request.",
    responses={200: {"content": {media: {} for media in _MEDIA.values()}}},
)
async def device_track(
    device_id: uuid.UUID,
    since: UtcDatetime | None = _SINCE,
    until: UtcDatetime | None = _UNTIL,
    format: Literal["geojson", "gpx", "csv"] = "geojson",
    simplify: float | None = Query(
        None, ge=0, le=10_000, description="Tolerance in metres (Douglas-Peucker)."
    ),
    ctx: Ctx = Depends(require(Permission.telemetry_read)),
) -> Response:
    found = await service.device_track(
        session=ctx.session,
        actor=ctx.actor,
        device_id=device_id,
        since=since,
        until=until,
        simplify_m=simplify,
    )
    if format == "geojson":
        body = orjson.dumps(track.to_geojson(found.points, name=found.name)).decode()
    elif format == "gpx":
        body = track.to_gpx(found.points, name=found.name)
    else:
        body = track.to_csv(found.points)
    return Response(
        body,
        media_type=_MEDIA[format],
        headers={
            "content-disposition": f'attachment; filename="track-{device_id}.{format}"',
            "x-track-positions": str(found.stored),
            "x-track-simplified-m": f"{found.tolerance_m:g}",
        },
    )
