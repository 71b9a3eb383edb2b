"""The audit log, read: filters over the trail `db/audit.py` writes."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from ctafleet.auth import users
from ctafleet.db.audit import AuditEvent

# What a fleet manager may read of the log: the fleet's objects, not users, sessions, settings.
FLEET_ENTITIES = frozenset({"vehicle", "driver", "assignment", "device", "meter_reading"})


def list_query(
    *,
    entity_type: str | None = None,
    entity_id: str | None = None,
    actor_user_id: uuid.UUID | None = None,
    action: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    fleet_only: bool = False,
) -> Select[AuditEvent]:
    stmt = select(AuditEvent)
    if fleet_only:
        stmt = stmt.where(AuditEvent.entity_type.in_(sorted(FLEET_ENTITIES)))
    if entity_type:
        stmt = stmt.where(AuditEvent.entity_type == entity_type)
    if entity_id:
        stmt = stmt.where(AuditEvent.entity_id == entity_id)
    if actor_user_id:
        stmt = stmt.where(AuditEvent.actor_user_id == actor_user_id)
    if action:
        stmt = stmt.where(AuditEvent.action == action)
    if since:
        stmt = stmt.where(AuditEvent.occurred_at >= since)
    if until:
        stmt = stmt.where(AuditEvent.occurred_at < until)
    return stmt


async def add_actors(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Names the acting users of a page of events (one query for the page)."""
    # A page's values are in their JSON form: an id may be its text (see `page_rows`).
    ids = {str(r["actor_user_id"]) for r in rows if r.get("actor_user_id") is not None}
    found = await users.names(session=session, user_ids=[uuid.UUID(i) for i in ids])
    names = {str(k): v for k, v in found.items()}
    for row in rows:
        actor = row.get("actor_user_id")
        named = names.get(str(actor)) if actor is not None else None
        row["actor_email"], row["actor_name"] = named if named else (None, None)
