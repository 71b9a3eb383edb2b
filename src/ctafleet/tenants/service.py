"""Organisations: created by the platform (CLI), their settings changed by their admins."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ctafleet.db import audit, toolkit
from ctafleet.db.scope import tenant_of
from ctafleet.db.toolkit import IfMatch
from ctafleet.kernel.context import Actor
from ctafleet.kernel.errors import Conflict, Invalid, NotFound
from ctafleet.kernel.money import validate_currency
from ctafleet.tenants.models import Tenant
from ctafleet.tenants.schemas import SLUG, TenantSettingsUpdate, validate_timezone


async def create_tenant(
    *,
    session: AsyncSession,
    slug: str,
    name: str,
    display_units: str = "metric",
    timezone: str = "UTC",
    currency: str = "USD",
) -> Tenant:
    """Platform operation (CLI, seeding): a new organisation. Needs a system session."""
    if not SLUG.match(slug):
        raise Invalid("slug", "slug: lowercase letters, digits and dashes, 1-63 characters")
    if display_units not in ("metric", "imperial"):
        raise Invalid("display_units", "display units must be metric or imperial")
    try:
        validate_timezone(timezone)
        validate_currency(currency)
    except ValueError as exc:
        raise Invalid(None, str(exc)) from exc
    if (await session.scalars(select(Tenant.id).where(Tenant.slug == slug))).first():
        raise Conflict("duplicate-tenant", f"a tenant with slug {slug!r} already exists")
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
    audit.record_created(session, Actor.system(tenant.id), "tenant", tenant)
    await toolkit.commit(session, what="the tenant")
    return tenant


async def find_tenant(*, session: AsyncSession, slug: str) -> Tenant | None:
    """The tenant with this slug (platform operations; a system session)."""
    return (await session.scalars(select(Tenant).where(Tenant.slug == slug))).first()


async def get_tenant(*, session: AsyncSession, actor: Actor) -> Tenant:
    tenant = await session.get(Tenant, tenant_of(session) or actor.tenant_id)
    if tenant is None:
        raise NotFound("tenant")
    return tenant


async def update_tenant(
    *, session: AsyncSession, actor: Actor, data: TenantSettingsUpdate, if_match: IfMatch | None
) -> Tenant:
    tenant = await get_tenant(session=session, actor=actor)
    changes = data.model_dump(exclude_unset=True)
    for key, value in changes.items():
        if value is None:
            raise Invalid(key, "settings cannot be set to null")
    if "mfa_required_roles" in changes:
        changes["mfa_required_roles"] = sorted(set(changes["mfa_required_roles"]))
    # An empty PATCH changes nothing and records nothing.
    return await toolkit.update(session, actor, tenant, changes, entity="tenant", if_match=if_match)


async def mfa_required(*, session: AsyncSession, tenant_id: uuid.UUID, role: str) -> bool:
    """Does the tenant's policy require a second factor for this role?"""
    tenant = await session.get(Tenant, tenant_id)
    return tenant is not None and role in (tenant.mfa_required_roles or [])
