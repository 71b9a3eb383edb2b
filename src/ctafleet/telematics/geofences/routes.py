from __future__ import annotations

import uuid

from fastapi import APIRouter, Depends, Query, Response

from ctafleet.api.etag import if_match_version, versioned
from ctafleet.api.pagination import (
    ListParams,
    Page,
    Sorting,
    json_response,
    list_params,
    list_response,
)
from ctafleet.auth.deps import Ctx, require
from ctafleet.auth.permissions import Permission
from ctafleet.db.toolkit import IfMatch
from ctafleet.telematics.geofences import service
from ctafleet.telematics.geofences.models import GeofenceRow
from ctafleet.telematics.geofences.schemas import GeofenceCreate, GeofenceRead, GeofenceUpdate

# No prefix: the export sits beside the collection (`/geofences.geojson`).
router = APIRouter(tags=["geofences"])

SORTING = Sorting(
    fields={
        "name": GeofenceRow.name,
        "created_at": GeofenceRow.created_at,
        "updated_at": GeofenceRow.updated_at,
    },
    default="name",
    tiebreak=GeofenceRow.id,
)


@router.get(
    "/geofences",
    response_model=Page[GeofenceRead],
    summary="List geofences",
    description=f"Sortable by: {SORTING.describe()}.",
)
async def list_geofences(
    active: bool | None = None,
    kind: str | None = Query(None, pattern="^(polygon|circle)$"),
    params: ListParams = Depends(list_params),
    ctx: Ctx = Depends(require(Permission.telemetry_read)),
) -> object:
    stmt = service.geofences_query(active=active, kind=kind)
    return await list_response(ctx.session, stmt, params, SORTING, GeofenceRead, "geofences.csv")


@router.get(
    "/geofences.geojson",
    summary="Every geofence as a GeoJSON FeatureCollection (circles: a Point with radius_m)",
    responses={200: {"content": {"application/geo+json": {}}}},
)
async def export_geofences(
    active: bool | None = None, ctx: Ctx = Depends(require(Permission.telemetry_read))
) -> Response:
    collection = await service.feature_collection(
        session=ctx.session, actor=ctx.actor, active=active
    )
    response = json_response(collection)
    response.headers["content-type"] = "application/geo+json"
    response.headers["content-disposition"] = 'attachment; filename="geofences.geojson"'
    return response


@router.post("/geofences", response_model=GeofenceRead, status_code=201, summary="Add a geofence")
async def create_geofence(
    body: GeofenceCreate,
    response: Response,
    ctx: Ctx = Depends(require(Permission.geofences_manage)),
) -> GeofenceRow:
    row = await service.create_geofence(session=ctx.session, actor=ctx.actor, data=body)
    response.headers["Location"] = f"/api/v1/geofences/{row.id}"
    return versioned(response, row)


@router.get("/geofences/{geofence_id}", response_model=GeofenceRead, summary="Read a geofence")
async def get_geofence(
    geofence_id: uuid.UUID,
    response: Response,
    ctx: Ctx = Depends(require(Permission.telemetry_read)),
) -> GeofenceRow:
    row = await service.get_geofence(session=ctx.session, actor=ctx.actor, geofence_id=geofence_id)
    return versioned(response, row)


@router.patch(
    "/geofences/{geofence_id}",
    response_model=GeofenceRead,
    summary="Change a geofence (its new shape applies to the next positions)",
)
async def update_geofence(
    geofence_id: uuid.UUID,
    body: GeofenceUpdate,
    response: Response,
    if_match: IfMatch | None = Depends(if_match_version),
    ctx: Ctx = Depends(require(Permission.geofences_manage)),
) -> GeofenceRow:
    row = await service.update_geofence(
        session=ctx.session, actor=ctx.actor, geofence_id=geofence_id, data=body, if_match=if_match
    )
    return versioned(response, row)


@router.delete("/geofences/{geofence_id}", status_code=204, summary="Delete a geofence")
async def delete_geofence(
    geofence_id: uuid.UUID,
    if_match: IfMatch | None = Depends(if_match_version),
    ctx: Ctx = Depends(require(Permission.geofences_manage)),
) -> Response:
    await service.delete_geofence(
        session=ctx.session, actor=ctx.actor, geofence_id=geofence_id, if_match=if_match
    )
    return Response(status_code=204)
