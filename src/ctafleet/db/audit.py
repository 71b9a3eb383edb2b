"""The audit trail's write side: every mutation, with before/after of the changed fields, secrets
redacted. Part of the data-access toolkit (the versioned update and the audited 404 write it);
`ctafleet.audit` is the read side (the API over it)."""

from __future__ import annotations

import enum
import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import structlog
from sqlalchemy import JSON, Index, String
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from ctafleet.db.base import Base, IdMixin, TenantMixin, utcnow
from ctafleet.db.scope import system_session
from ctafleet.kernel.context import Actor

log = structlog.get_logger("ctafleet.audit")

REDACTED = "[redacted]"
_SECRET_MARKERS = ("password", "secret", "token", "credential", "hash", "recovery", "totp")
# Bookkeeping columns that every update changes: not worth an entry of their own.
_UNAUDITED = frozenset({"created_at", "updated_at", "version"})


class AuditEvent(IdMixin, TenantMixin, Base):
    """Append-only: the application role may insert and read, never update or delete."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_tenant_time", "tenant_id", "occurred_at"),)

    occurred_at: Mapped[datetime] = mapped_column(default=utcnow)
    actor_user_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    actor_role: Mapped[str | None] = mapped_column(String(32), default=None)
    action: Mapped[str] = mapped_column(String(64))
    entity_type: Mapped[str] = mapped_column(String(64))
    entity_id: Mapped[str | None] = mapped_column(String(64), default=None, index=True)
    changes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    request_id: Mapped[str | None] = mapped_column(String(64), default=None)
    client_ip: Mapped[str | None] = mapped_column(String(64), default=None)


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
    names = fields or [c.key for c in obj.__table__.columns]
    return {n: getattr(obj, n) for n in names if n not in _UNAUDITED}


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
    """Written into the owner's audit log, so the organisation that was probed can see it.

    Committed on its own (system) session: the request's transaction ends in a 404 and rolls
    back, the record of the attempt must not.
    """
    log.warning(
        "cross_tenant_access_denied",
        entity_type=entity_type,
        entity_id=str(entity_id),
        actor_tenant=str(actor.tenant_id),
        owner_tenant=str(owner_tenant_id),
    )
    async with system_session(session.bind) as system:
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
