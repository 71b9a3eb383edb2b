"""Tenant scoping of reads: the service layer's wall (row-level security is the second)."""

from __future__ import annotations

import uuid
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ctafleet.api.problems import not_found
from ctafleet.db.engine import SCOPE_KEY, SYSTEM_SCOPE

M = TypeVar("M")


async def get_in_tenant(
    session: AsyncSession,
    actor: Any,
    model: type[M],
    entity_id: uuid.UUID,
    *,
    entity: str,
    for_update: bool = False,
) -> M:
    """The row if it belongs to the actor's tenant; otherwise 404, auditing a cross-tenant probe."""
    stmt = select(model).where(
        model.id == entity_id,  # type: ignore[attr-defined]
        model.tenant_id == actor.tenant_id,  # type: ignore[attr-defined]
    )
    if for_update:
        # Re-read under the lock: an object already in the session would otherwise keep the
        # values it had before another transaction changed it.
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
    obj = (await session.scalars(stmt)).first()
    if obj is not None:
        return obj
    owner = await owner_tenant(session, model, entity_id)
    if owner is not None and owner != actor.tenant_id:
        from ctafleet.audit.service import record_cross_tenant_attempt

        await record_cross_tenant_attempt(
            session, actor, entity_type=entity, owner_tenant_id=owner, entity_id=entity_id
        )
    raise not_found(entity)


async def owner_tenant(
    session: AsyncSession, model: type[Any], entity_id: uuid.UUID
) -> uuid.UUID | None:
    async with AsyncSession(bind=session.bind, info={SCOPE_KEY: SYSTEM_SCOPE}) as system:
        return (await system.scalars(select(model.tenant_id).where(model.id == entity_id))).first()
