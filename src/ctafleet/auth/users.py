"""Users of a tenant: create, read, list, change, reset their second factor."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from sqlalchemy import Select, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ctafleet.auth.models import RecoveryCode, User
from ctafleet.auth.passwords import hash_password
from ctafleet.auth.schemas import UserCreate, UserUpdate
from ctafleet.auth.service import enforce_policy, revoke_sessions
from ctafleet.config import AuthSettings
from ctafleet.db import audit, toolkit
from ctafleet.db.scope import system_session
from ctafleet.db.toolkit import IfMatch
from ctafleet.kernel.context import Actor
from ctafleet.kernel.errors import Conflict


def _email_taken() -> Conflict:
    return Conflict("email-taken", "a user with this e-mail already exists")


def users_query(*, role: str | None = None, is_active: bool | None = None) -> Select[User]:
    stmt = select(User)
    if role:
        stmt = stmt.where(User.role == role)
    if is_active is not None:
        stmt = stmt.where(User.is_active == is_active)
    return stmt


async def names(
    *, session: AsyncSession, user_ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, tuple[str, str]]:
    """E-mail and full name of these users of the session's tenant, by id."""
    wanted = list(user_ids)
    if not wanted:
        return {}
    rows = await toolkit.rows(
        session, select(User.id, User.email, User.full_name).where(User.id.in_(wanted))
    )
    return {r.id: (r.email, r.full_name) for r in rows}


async def get_user(*, session: AsyncSession, actor: Actor, user_id: uuid.UUID) -> User:
    return await toolkit.get(session, actor, User, user_id, entity="user")


async def create_user(
    *, session: AsyncSession, actor: Actor, settings: AuthSettings, data: UserCreate
) -> User:
    enforce_policy(settings, data.password, str(data.email), data.full_name)
    email = str(data.email).lower()

    # E-mail is unique platform-wide (login finds the tenant from it): the check sees other
    # tenants' users, and says only that the address is taken.
    async def unique() -> None:
        async with system_session(session.bind) as system:
            taken = await system.scalar(
                select(func.count()).select_from(User).where(User.email == email)
            )
        if taken:
            raise _email_taken()

    await unique()
    user = User(
        tenant_id=actor.tenant_id,
        email=email,
        full_name=data.full_name,
        role=data.role,
        password_hash=hash_password(data.password),
    )
    try:
        return await toolkit.create(session, actor, user, entity="user", recheck=unique)
    except Conflict as exc:
        if exc.slug == "duplicate":
            raise _email_taken() from exc
        raise


async def update_user(
    *,
    session: AsyncSession,
    actor: Actor,
    user_id: uuid.UUID,
    data: UserUpdate,
    if_match: IfMatch | None,
) -> User:
    user = await toolkit.get(session, actor, User, user_id, entity="user")
    toolkit.check_version(user.version, if_match)
    # An explicit null means "leave as is"; a field sent with its current value is no change
    # (clients that send the whole object back must not end sessions or trip the self-check).
    changes = {
        key: value
        for key, value in data.model_dump(exclude_unset=True).items()
        if value is not None and value != getattr(user, key)
    }
    if user.id == actor.user_id and ("role" in changes or changes.get("is_active") is False):
        raise Conflict(
            "cannot-demote-self",
            "you cannot change your own role or deactivate yourself; ask another admin",
        )
    if changes.get("is_active") is False or "role" in changes:
        await revoke_sessions(
            session=session, user_id=user.id, now=actor.now(), reason="user_changed"
        )
    return await toolkit.update(session, actor, user, changes, entity="user", if_match=if_match)


async def reset_mfa(*, session: AsyncSession, actor: Actor, user_id: uuid.UUID) -> User:
    user = await toolkit.get(session, actor, User, user_id, entity="user")
    if user.id == actor.user_id:
        # The admin route would end the admin's own session mid-request; their own second
        # factor is theirs to manage (POST /auth/mfa/setup after a recovery-code login).
        raise Conflict(
            "cannot-reset-own-mfa",
            "you cannot reset your own two-factor authentication here; ask another admin",
        )
    now = actor.now()
    user.totp_enabled = False
    user.totp_secret = None
    user.totp_last_step = None
    await session.execute(
        update(RecoveryCode)
        .where(RecoveryCode.user_id == user.id, RecoveryCode.used_at.is_(None))
        .values(used_at=now)
    )
    await revoke_sessions(session=session, user_id=user.id, now=now, reason="mfa_reset")
    audit.record(session, actor, action="mfa_reset", entity_type="user", entity_id=user.id)
    await toolkit.commit(session, what="the user")
    return user
