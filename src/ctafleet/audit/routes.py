from __future__ import annotations

import uuid

from fastapi import APIRouter, Depends, Query
from pydantic import AwareDatetime

from ctafleet.api.pagination import (
    ListParams,
    Page,
    Sorting,
    list_params,
    list_response,
)
from ctafleet.audit import service
from ctafleet.audit.schemas import AuditEventRead
from ctafleet.auth.deps import Ctx, require
from ctafleet.auth.permissions import Permission, allowed
from ctafleet.db.audit import AuditEvent

router = APIRouter(prefix="/audit-events", tags=["audit"])


SORTING = Sorting(
    fields={"occurred_at": AuditEvent.occurred_at}, default="-occurred_at", tiebreak=AuditEvent.id
)


@router.get(
    "",
    response_model=Page[AuditEventRead],
    summary="The audit log (newest first)",
    description="Admins and auditors read all of it; fleet managers the events of fleet "
    "objects (vehicles, drivers, assignments, devices, meter readings).",
)
async def list_events(
    entity_type: str | None = Query(None, max_length=64),
    entity_id: str | None = Query(None, max_length=64),
    actor_user_id: uuid.UUID | None = None,
    action: str | None = Query(None, max_length=64),
    since: AwareDatetime | None = None,
    until: AwareDatetime | None = None,
    params: ListParams = Depends(list_params),
    ctx: Ctx = Depends(require(Permission.audit_read_fleet)),
) -> object:
    stmt = service.list_query(
        fleet_only=not allowed(ctx.actor.role, Permission.audit_read),
        entity_type=entity_type,
        entity_id=entity_id,
        actor_user_id=actor_user_id,
        action=action,
        since=since,
        until=until,
    )
    return await list_response(
        ctx.session,
        stmt,
        params,
        SORTING,
        AuditEventRead,
        "audit-events.csv",
        computed=("actor_email", "actor_name"),
        add=service.add_actors,
    )
