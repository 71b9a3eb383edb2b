from __future__ import annotations

import uuid

from fastapi import APIRouter, Depends, Query, Response

from ctafleet.api.etag import if_match_version, versioned
from ctafleet.api.pagination import ListParams, Page, Sorting, list_params, list_response
from ctafleet.auth.deps import Ctx, require
from ctafleet.auth.permissions import Permission
from ctafleet.db.toolkit import IfMatch
from ctafleet.fleet.assignments import service
from ctafleet.fleet.assignments.models import Assignment
from ctafleet.fleet.assignments.schemas import AssignmentCreate, AssignmentRead, AssignmentUpdate
from ctafleet.kernel.schemas import UtcDatetime

router = APIRouter(prefix="/assignments", tags=["assignments"])

SORTING = Sorting(
    fields={"starts_at": Assignment.starts_at, "created_at": Assignment.created_at},
    default="-starts_at",
    tiebreak=Assignment.id,
)


@router.get(
    "",
    response_model=Page[AssignmentRead],
    summary="List assignments",
    description=f"Sortable by: {SORTING.describe()}.",
)
async def list_assignments(
    vehicle_id: uuid.UUID | None = None,
    driver_id: uuid.UUID | None = None,
    active_at: UtcDatetime | None = Query(None, description="Only those active at this time."),
    params: ListParams = Depends(list_params),
    ctx: Ctx = Depends(require(Permission.assignments_read)),
) -> object:
    stmt = await service.list_query(
        session=ctx.session,
        actor=ctx.actor,
        vehicle_id=vehicle_id,
        driver_id=driver_id,
        active_at=active_at,
    )
    return await list_response(
        ctx.session, stmt, params, SORTING, AssignmentRead, "assignments.csv"
    )


@router.post(
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
    assignment = await service.create_assignment(session=ctx.session, actor=ctx.actor, data=body)
    response.headers["Location"] = f"/api/v1/assignments/{assignment.id}"
    return versioned(response, assignment)


@router.get("/{assignment_id}", response_model=AssignmentRead, summary="Read an assignment")
async def get_assignment(
    assignment_id: uuid.UUID,
    response: Response,
    ctx: Ctx = Depends(require(Permission.assignments_read)),
) -> Assignment:
    assignment = await service.get_assignment(
        session=ctx.session, actor=ctx.actor, assignment_id=assignment_id
    )
    return versioned(response, assignment)


@router.patch(
    "/{assignment_id}",
    response_model=AssignmentRead,
    summary="End an assignment or change its notes",
)
async def update_assignment(
    assignment_id: uuid.UUID,
    body: AssignmentUpdate,
    response: Response,
    if_match: IfMatch | None = Depends(if_match_version),
    ctx: Ctx = Depends(require(Permission.assignments_write)),
) -> Assignment:
    assignment = await service.update_assignment(
        session=ctx.session,
        actor=ctx.actor,
        assignment_id=assignment_id,
        data=body,
        if_match=if_match,
    )
    return versioned(response, assignment)


@router.delete("/{assignment_id}", status_code=204, summary="Delete an assignment")
async def delete_assignment(
    assignment_id: uuid.UUID, ctx: Ctx = Depends(require(Permission.assignments_write))
) -> Response:
    await service.delete_assignment(
        session=ctx.session, actor=ctx.actor, assignment_id=assignment_id
    )
    return Response(status_code=204)
