"""A tenant's telemetry policy: how long its positions are kept, and its ingest key for
legacy trackers that can send only their id (each such device must also allow it)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ctafleet.auth.tokens import digest, new_secret
from ctafleet.db import toolkit
from ctafleet.db.toolkit import IfMatch
from ctafleet.kernel.context import Actor
from ctafleet.telematics.ingest.credentials import TENANT_KEY_SECRET_PREFIX
from ctafleet.telematics.models import TelemetrySettings

ENTITY = "telemetry_settings"


async def _stored(session: AsyncSession, actor: Actor) -> TelemetrySettings | None:
    return (
        await session.scalars(
            select(TelemetrySettings)
            .where(TelemetrySettings.tenant_id == actor.tenant_id)
            .with_for_update()
        )
    ).first()


async def get_policy(
    *, session: AsyncSession, actor: Actor, default_retention_days: int
) -> TelemetrySettings:
    """The tenant's policy; the defaults (not stored) until it first changes one."""
    found = (
        await session.scalars(
            select(TelemetrySettings).where(TelemetrySettings.tenant_id == actor.tenant_id)
        )
    ).first()
    if found is not None:
        return found
    return TelemetrySettings(
        tenant_id=actor.tenant_id, retention_days=default_retention_days, version=0
    )


async def _change(
    session: AsyncSession,
    actor: Actor,
    changes: dict[str, object],
    *,
    default_retention_days: int,
    if_match: IfMatch | None = None,
    action: str = "update",
) -> TelemetrySettings:
    stored = await _stored(session, actor)
    if stored is None:
        # The defaults count as version 0: an If-Match read from them still applies.
        toolkit.check_version(0, if_match)
        stored = TelemetrySettings(tenant_id=actor.tenant_id, retention_days=default_retention_days)
        await toolkit.create(session, actor, stored, entity=ENTITY, commit_now=False)
        if_match = None
    return await toolkit.update(
        session, actor, stored, changes, entity=ENTITY, if_match=if_match, action=action
    )


async def update_policy(
    *,
    session: AsyncSession,
    actor: Actor,
    retention_days: int,
    default_retention_days: int,
    if_match: IfMatch | None,
) -> TelemetrySettings:
    return await _change(
        session,
        actor,
        {"retention_days": retention_days},
        default_retention_days=default_retention_days,
        if_match=if_match,
    )


async def new_ingest_key(
    *, session: AsyncSession, actor: Actor, default_retention_days: int
) -> tuple[TelemetrySettings, str]:
    """A new tenant ingest key (the previous one stops working): known only now."""
    secret = new_secret(TENANT_KEY_SECRET_PREFIX)
    policy = await _change(
        session,
        actor,
        {"ingest_key_hash": digest(secret), "ingest_key_prefix": secret[:10]},
        default_retention_days=default_retention_days,
        action="new_ingest_key",
    )
    return policy, secret


async def revoke_ingest_key(
    *, session: AsyncSession, actor: Actor, default_retention_days: int
) -> TelemetrySettings:
    return await _change(
        session,
        actor,
        {"ingest_key_hash": None, "ingest_key_prefix": None},
        default_retention_days=default_retention_days,
        action="revoke_ingest_key",
    )
