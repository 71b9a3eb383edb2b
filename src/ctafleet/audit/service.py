"""The audit trail: every mutation, with before/after of the changed fields, secrets redacted."""

from __future__ import annotations

import enum
import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from ctafleet.audit.models import AuditEvent

if TYPE_CHECKING:
    from ctafleet.auth.deps import Actor

log = structlog.get_logger("ctafleet.audit")

REDACTED = "[redacted]"
_SECRET_MARKERS = ("password", "secret", "token", "credential", "hash", "recovery", "totp")


def is_secret_field(name: str) -> bool:
    lowered = name.lower()
    return any(marker in lowered for marker in _SECRET_MARKERS)


def _plain(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_plain(v) for v in value]
    return value


def diff(before: dict[str, Any] | None, after: dict[str, Any] | None) -> dict[str, Any]:
    """`{field: {"before": x, "after": y}}` for fields that changed; secrets redacted."""
    before = before or {}
    after = after or {}
    changes: dict[str, Any] = {}
    for name in sorted(set(before) | set(after)):
        old, new = before.get(name), after.get(name)
        if old == new:
            continue
        if is_secret_field(name):
            changes[name] = {
                "before": REDACTED if old is not None else None,
                "after": REDACTED if new is not None else None,
            }
        else:
            changes[name] = {"before": _plain(old), "after": _plain(new)}
    return changes


def snapshot(obj: Any, fields: list[str] | None = None) -> dict[str, Any]:
    """Column values of an ORM object (for before/after)."""
    table = obj.__table__
    names = fields or [c.key for c in table.columns]
    return {n: getattr(obj, n) for n in names if n not in ("created_at", "updated_at", "version")}


def record(
    session: AsyncSession,
    actor: Actor,
    *,
    action: str,
    entity_type: str,
    entity_id: Any,
    changes: dict[str, Any] | None = None,
    tenant_id: uuid.UUID | None = None,
) -> AuditEvent:
    """Adds the event to the caller's transaction: it commits, or rolls back, with the change."""
    event = AuditEvent(
        tenant_id=tenant_id or actor.tenant_id,
        actor_user_id=actor.user_id,
        actor_role=actor.role,
        action=action,
        entity_type=entity_type,
        entity_id=str(entity_id) if entity_id is not None else None,
        changes=changes or {},
        request_id=actor.request_id,
        client_ip=actor.client_ip,
    )
    session.add(event)
    return event


def record_created(session: AsyncSession, actor: Actor, entity_type: str, obj: Any) -> AuditEvent:
    """The audit event of a new object: every column as `after`."""
    return record(
        session,
        actor,
        action="create",
        entity_type=entity_type,
        entity_id=obj.id,
        changes=diff(None, snapshot(obj)),
    )


async def record_cross_tenant_attempt(
    session: AsyncSession,
    actor: Actor,
    *,
    entity_type: str,
    owner_tenant_id: uuid.UUID,
    entity_id: Any,
) -> None:
    """Written into the owner's audit log, so the organisation that was probed can see it."""
    from ctafleet.db.engine import SCOPE_KEY, SYSTEM_SCOPE

    log.warning(
        "cross_tenant_access_denied",
        entity_type=entity_type,
        entity_id=str(entity_id),
        actor_tenant=str(actor.tenant_id),
        owner_tenant=str(owner_tenant_id),
    )
    async with AsyncSession(bind=session.bind, info={SCOPE_KEY: SYSTEM_SCOPE}) as system:
        record(
            system,
            actor,
            action="cross_tenant_access_denied",
            entity_type=entity_type,
            entity_id=entity_id,
            changes={"actor_tenant_id": {"before": None, "after": str(actor.tenant_id)}},
            tenant_id=owner_tenant_id,
        )
        await system.commit()


def list_query(
    tenant_id: uuid.UUID,
    *,
    entity_type: str | None = None,
    entity_id: str | None = None,
    actor_user_id: uuid.UUID | None = None,
    action: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Select[AuditEvent]:
    stmt = select(AuditEvent).where(AuditEvent.tenant_id == tenant_id)
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
