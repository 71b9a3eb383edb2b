"""A tenant's telemetry policy: how long its positions are kept, its ingest key for legacy
trackers that can send only their id (each such device must also allow it), and its own
thresholds for trips, stops and events (`TenantRules` gives them to the worker)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ctafleet.auth.tokens import digest, new_secret
from ctafleet.db import toolkit
from ctafleet.db.toolkit import IfMatch
from ctafleet.kernel.context import Actor
from ctafleet.kernel.errors import Invalid
from ctafleet.telematics.derive.rules import Rules, tenant_rules
from ctafleet.telematics.ingest.credentials import TENANT_KEY_SECRET_PREFIX
from ctafleet.telematics.models import TelemetrySettings

ENTITY = "telemetry_settings"
log = structlog.get_logger("ctafleet.telemetry.policy")


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
    retention_days: int | None = None,
    rules: Mapping[str, float | None] | None = None,
    default_retention_days: int,
    if_match: IfMatch | None,
) -> TelemetrySettings:
    """`rules`: thresholds to set, a None value returning one to its default."""
    changes: dict[str, object] = {}
    if retention_days is not None:
        changes["retention_days"] = retention_days
    if rules is not None:
        current = await get_policy(
            session=session, actor=actor, default_retention_days=default_retention_days
        )
        merged = {**(current.rules or {}), **rules}
        merged = {k: v for k, v in merged.items() if v is not None}
        try:
            tenant_rules(merged)
        except ValueError as exc:  # each value passed its own range: a combination
            raise Invalid("rules", str(exc).removeprefix("rules: ")) from None
        changes["rules"] = merged or None
    if not changes:
        raise Invalid(None, "Nothing to change: give retention_days or rules.")
    return await _change(
        session,
        actor,
        changes,
        default_retention_days=default_retention_days,
        if_match=if_match,
    )


class TenantRules:
    """The worker's rules (`RulesSource`): each tenant's thresholds from its policy, read
    again whenever its policy's version moved, so an API change applies from the next batch
    in every worker."""

    def __init__(self) -> None:
        self._rules: dict[uuid.UUID, tuple[int, Rules]] = {}
        self._default = Rules()

    def __call__(self, tenant_id: uuid.UUID, vehicle_id: uuid.UUID | None) -> Rules:
        found = self._rules.get(tenant_id)
        return found[1] if found is not None else self._default

    @property
    def min_offline_after_s(self) -> float:
        return min(
            [self._default.offline_after_s, *(r.offline_after_s for _, r in self._rules.values())]
        )

    async def refresh(self, session: AsyncSession, tenants: Iterable[uuid.UUID] | None) -> None:
        """Reads the policies of `tenants` (None: of every tenant with its own rules); a
        tenant without its own rules gets the defaults."""
        t = TelemetrySettings
        stmt = select(t.tenant_id, t.version, t.rules)
        if tenants is None:
            asked = set(self._rules)
            stmt = stmt.where(t.rules.is_not(None))
        else:
            asked = set(tenants)
            if not asked:
                return
            stmt = stmt.where(t.tenant_id.in_(sorted(asked)))
        with_rules = set()
        for tenant, version, stored in await session.execute(stmt):
            if stored is None:
                continue
            with_rules.add(tenant)
            known = self._rules.get(tenant)
            if known is not None and known[0] == version:
                continue
            try:
                self._rules[tenant] = (version, tenant_rules(stored))
            except (TypeError, ValueError) as exc:  # validated on the way in: a hand edit
                log.warning("tenant_rules_unusable", tenant_id=str(tenant), error=str(exc))
                self._rules.pop(tenant, None)
        for tenant in asked - with_rules:
            self._rules.pop(tenant, None)


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
