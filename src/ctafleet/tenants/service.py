from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ctafleet.api.problems import Problem, not_found
from ctafleet.audit import service as audit
from ctafleet.auth.deps import Actor
from ctafleet.auth.service import check_version
from ctafleet.tenants.models import Tenant
from ctafleet.tenants.schemas import (
    SLUG,
    TenantSettingsUpdate,
    validate_currency,
    validate_timezone,
)


async def create_tenant(
    session: AsyncSession,
    *,
    slug: str,
    name: str,
    display_units: str = "metric",
    timezone: str = "UTC",
    currency: str = "USD",
) -> Tenant:
    """Platform operation (CLI): a new organisation. Needs a system-scoped session."""
    if not SLUG.match(slug):
        raise ValueError("slug: lowercase letters, digits and dashes, 1-63 characters")
    if display_units not in ("metric", "imperial"):
        raise ValueError("display units must be metric or imperial")
    validate_timezone(timezone)
    validate_currency(currency)
    if (await session.scalars(select(Tenant).where(Tenant.slug == slug))).first():
        raise ValueError(f"a tenant with slug {slug!r} already exists")
    tenant = Tenant(
        id=uuid.uuid4(),
        slug=slug,
        name=name,
        display_units=display_units,
        timezone=timezone,
        currency=currency,
        mfa_required_roles=[],
    )
    session.add(tenant)
    await session.flush()
    actor = Actor(tenant_id=tenant.id, user_id=None, role="system")
    audit.record_created(session, actor, "tenant", tenant)
    await session.commit()
    return tenant


async def get_tenant(session: AsyncSession, actor: Actor) -> Tenant:
    tenant = await session.get(Tenant, actor.tenant_id)
    if tenant is None:
        raise not_found("tenant")
    return tenant


async def update_tenant(
    session: AsyncSession, actor: Actor, data: TenantSettingsUpdate, if_match: int | None
) -> Tenant:
    tenant = await get_tenant(session, actor)
    check_version(tenant.version, if_match)
    before = audit.snapshot(tenant)
    changes = data.model_dump(exclude_unset=True)
    if any(v is None for v in changes.values()):
        raise Problem(422, "validation-error", "settings cannot be set to null")
    for key, value in changes.items():
        setattr(tenant, key, sorted(set(value)) if key == "mfa_required_roles" else value)
    changed = audit.diff(before, audit.snapshot(tenant))
    if changed:  # an empty PATCH changes nothing and records nothing
        audit.record(
            session,
            actor,
            action="update",
            entity_type="tenant",
            entity_id=tenant.id,
            changes=changed,
        )
    await session.commit()
    return tenant
