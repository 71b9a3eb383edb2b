from __future__ import annotations

import uuid
from datetime import datetime

from fastapi import APIRouter, Depends, Query
from pydantic import AwareDatetime, BaseModel, ConfigDict

from ctafleet.api.pagination import (
    ListParams,
    Page,
    Sorting,
    list_params,
    list_response,
)
from ctafleet.audit import service
from ctafleet.auth.deps import Ctx, require
from ctafleet.auth.permissions import Permission
from ctafleet.db.audit import AuditEvent

router = APIRouter(prefix="/audit-events", tags=["audit"])


class AuditEventRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    occurred_at: datetime
    actor_user_id: uuid.UUID | None
    actor_role: str | None
    action: str
    entity_type: str
    entity_id: str | None
    changes: dict[str, object]
    request_id: str | None
    client_ip: str | None


SORTING = Sorting(
    fields={"occurred_at": AuditEvent.occurred_at}, default="-occurred_at", tiebreak=AuditEvent.id
)


@router.get("", response_model=Page[AuditEventRead], summary="The audit log (newest first)")
async def list_events(
    entity_type: str | None = Query(None, max_length=64),
    entity_id: str | None = Query(None, max_length=64),
    actor_user_id: uuid.UUID | None = None,
    action: str | None = Query(None, max_length=64),
    since: AwareDatetime | None = None,
    until: AwareDatetime | None = None,
    params: ListParams = Depends(list_params),
    ctx: Ctx = Depends(require(Permission.audit_read)),
) -> object:
    stmt = service.list_query(
        entity_type=entity_type,
        entity_id=entity_id,
        actor_user_id=actor_user_id,
        action=action,
        since=since,
        until=until,
    )
    return await list_response(
        ctx.session, stmt, params, SORTING, AuditEventRead, "audit-events.csv"
    )
