"""Login, token rotation, logout, password change and MFA enrolment."""

from __future__ import annotations

import secrets
import uuid
from datetime import datetime, timedelta

import pyotp
import structlog
from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ctafleet.auth.models import AuthSession, RecoveryCode, RefreshToken, User
from ctafleet.auth.passwords import (
    PasswordPolicyError,
    check_policy,
    hash_password,
    needs_rehash,
    verify_password,
)
from ctafleet.auth.schemas import TokenPair
from ctafleet.auth.sso.policy import password_login_refused
from ctafleet.auth.tokens import AccessClaims, digest, issue_access_token, new_secret
from ctafleet.config import AuthSettings
from ctafleet.db import audit, toolkit
from ctafleet.kernel.context import Actor
from ctafleet.kernel.errors import Conflict, Forbidden, Invalid, Unauthenticated
from ctafleet.observability.metrics import AUTH_FAILURES
from ctafleet.tenants import service as tenants
from ctafleet.tenants.models import Tenant

log = structlog.get_logger("ctafleet.auth")

RECOVERY_CODE_COUNT = 10
TOTP_ISSUER = "CTAFleet"


def _invalid_credentials() -> Unauthenticated:
    return Unauthenticated("e-mail, password or code is wrong", slug="invalid-credentials")


def _invalid_refresh(detail: str) -> Unauthenticated:
    AUTH_FAILURES.labels(kind="refresh").inc()
    return Unauthenticated(detail, slug="invalid-refresh-token")


def _actor_of(user: User, actor: Actor) -> Actor:
    """The user acting, from an actor that knows the request (address, id, clock)."""
    return Actor(
        tenant_id=user.tenant_id,
        user_id=user.id,
        role=user.role,
        request_id=actor.request_id,
        client_ip=actor.client_ip,
        clock=actor.clock,
    )


def _totp_step(user: User, code: str, now: datetime) -> int | None:
    """The time step the code belongs to (current ±1), or None."""
    if not user.totp_secret:
        return None
    totp = pyotp.TOTP(user.totp_secret)
    for offset in (0, -1, 1):
        at = now + timedelta(seconds=30 * offset)
        if secrets.compare_digest(totp.at(at), code):
            return int(at.timestamp()) // 30
    return None


def _normalise_recovery(code: str) -> str:
    return code.strip().lower().replace("-", "").replace(" ", "")


async def _check_second_factor(
    session: AsyncSession, user: User, code: str | None, now: datetime
) -> str:
    """'totp' or 'recovery' when the code is good; raises otherwise."""
    if not code:
        raise Unauthenticated(
            "this account uses two-factor authentication: send totp_code",
            slug="mfa-code-required",
            mfa_required=True,
        )
    if code.isdigit() and len(code) == 6:
        step = _totp_step(user, code, now)
        if step is None:
            raise _invalid_credentials()
        # A conditional UPDATE rather than read-compare-write: of two logins racing with the
        # same code exactly one wins. A bulk UPDATE also leaves the row's version (ETag) alone.
        claimed = await session.execute(
            update(User)
            .where(
                User.id == user.id,
                or_(User.totp_last_step.is_(None), User.totp_last_step < step),
            )
            .values(totp_last_step=step)
            .execution_options(synchronize_session=False)
        )
        if claimed.rowcount != 1:  # type: ignore[attr-defined]
            raise _invalid_credentials()
        return "totp"
    used = await session.execute(
        update(RecoveryCode)
        .where(
            RecoveryCode.user_id == user.id,
            RecoveryCode.code_hash == digest(_normalise_recovery(code)),
            RecoveryCode.used_at.is_(None),
        )
        .values(used_at=now)
    )
    if used.rowcount != 1:  # type: ignore[attr-defined]
        raise _invalid_credentials()
    return "recovery"


def _issue(
    session: AsyncSession,
    settings: AuthSettings,
    user: User,
    auth_session: AuthSession,
    now: datetime,
) -> TokenPair:
    refresh = new_secret("ctr")
    session.add(
        RefreshToken(
            tenant_id=user.tenant_id,
            session_id=auth_session.id,
            token_hash=digest(refresh),
            created_at=now,
            expires_at=auth_session.expires_at,
        )
    )
    pending = not auth_session.mfa_verified
    access, ttl = issue_access_token(
        settings,
        AccessClaims(
            user_id=user.id,
            tenant_id=user.tenant_id,
            session_id=auth_session.id,
            role=user.role,
            mfa_pending=pending,
        ),
        now,
    )
    return TokenPair(
        access_token=access, refresh_token=refresh, expires_in=ttl, mfa_enrolment_required=pending
    )


async def login(
    *,
    session: AsyncSession,
    request: Actor,
    settings: AuthSettings,
    email: str,
    password: str,
    totp_code: str | None,
) -> TokenPair:
    """`session` is a system session (the tenant is found from the e-mail); `request` is an
    actor that carries only the request's address, id and clock."""
    now = request.now()
    user = (await session.scalars(select(User).where(User.email == email.lower()))).first()
    password_ok = verify_password(user.password_hash if user else None, password)
    if user is None or not password_ok or not user.is_active:
        if user is not None:
            audit.record(
                session,
                _actor_of(user, request),
                action="login_failed",
                entity_type="user",
                entity_id=user.id,
            )
            await session.commit()
        log.info("login_failed", reason="credentials")
        AUTH_FAILURES.labels(kind="password").inc()
        raise _invalid_credentials()
    actor = _actor_of(user, request)
    if await password_login_refused(session=session, user=user):
        # Checked after the password: only someone who knows it learns that the tenant
        # requires single sign-on.
        audit.record(
            session,
            actor,
            action="login_failed",
            entity_type="user",
            entity_id=user.id,
            changes={"reason": {"before": None, "after": "sso_required"}},
        )
        await session.commit()
        AUTH_FAILURES.labels(kind="password").inc()
        tenant = await session.get(Tenant, user.tenant_id)
        raise Forbidden(
            "your organisation signs in with single sign-on: "
            f"GET /api/v1/auth/oidc/{tenant.slug if tenant else '<organisation>'}/login",
            slug="sso-required",
        )
    if user.totp_enabled:
        try:
            method = await _check_second_factor(session, user, totp_code, now)
        except Unauthenticated as exc:
            if exc.slug == "invalid-credentials":
                AUTH_FAILURES.labels(kind="mfa").inc()
                audit.record(
                    session,
                    actor,
                    action="login_failed",
                    entity_type="user",
                    entity_id=user.id,
                    changes={"reason": {"before": None, "after": "mfa"}},
                )
                await session.commit()
            raise
        if method == "recovery":
            audit.record(
                session, actor, action="recovery_code_used", entity_type="user", entity_id=user.id
            )
    required = await tenants.mfa_required(session=session, tenant_id=user.tenant_id, role=user.role)
    return await open_session(
        session=session,
        request=request,
        settings=settings,
        user=user,
        method="password",
        mfa_verified=user.totp_enabled or not required,
        password=password,
    )


async def open_session(
    *,
    session: AsyncSession,
    request: Actor,
    settings: AuthSettings,
    user: User,
    method: str,
    mfa_verified: bool,
    password: str | None = None,
) -> TokenPair:
    """A new login session for a user whose identity was just proven (`method`: `password`,
    `oidc`), its token pair, and the `login` audit event; commits. `password` is the one that
    was checked, to rehash it when the hashing parameters changed."""
    now = request.now()
    # Bookkeeping goes through a bulk UPDATE: bumping the row's version here would make
    # concurrent logins of one user fail (500) and an admin's If-Match go stale on every
    # login of the user being edited.
    bookkeeping: dict[str, object] = {"last_login_at": now}
    if password is not None and needs_rehash(user.password_hash):
        bookkeeping["password_hash"] = hash_password(password)
    await session.execute(
        update(User)
        .where(User.id == user.id)
        .values(**bookkeeping)
        .execution_options(synchronize_session=False)
    )
    auth_session = AuthSession(
        id=uuid.uuid4(),
        tenant_id=user.tenant_id,
        user_id=user.id,
        created_at=now,
        expires_at=now + timedelta(seconds=settings.refresh_token_ttl_s),
        mfa_verified=mfa_verified,
        client_ip=request.client_ip,
    )
    session.add(auth_session)
    pair = _issue(session, settings, user, auth_session, now)
    audit.record(
        session,
        _actor_of(user, request),
        action="login",
        entity_type="user",
        entity_id=user.id,
        changes={"method": {"before": None, "after": method}},
    )
    await session.commit()
    return pair


async def refresh(
    *, session: AsyncSession, request: Actor, settings: AuthSettings, refresh_token: str
) -> TokenPair:
    """`session` is a system session (the token names its tenant)."""
    now = request.now()
    token = (
        await session.scalars(
            select(RefreshToken).where(RefreshToken.token_hash == digest(refresh_token))
        )
    ).first()
    if token is None:
        raise _invalid_refresh("the refresh token is not valid")
    auth_session = await session.get(AuthSession, token.session_id)
    user = await session.get(User, auth_session.user_id) if auth_session else None
    if auth_session is None or user is None:
        raise _invalid_refresh("the refresh token is not valid")
    actor = _actor_of(user, request)
    # Claim the token atomically: of two concurrent refreshes exactly one wins.
    claimed = await session.execute(
        update(RefreshToken)
        .where(RefreshToken.id == token.id, RefreshToken.used_at.is_(None))
        .values(used_at=now)
    )
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        # A rotated token came back: someone holds a copy. End the whole family.
        if auth_session.revoked_at is None:
            auth_session.revoked_at = now
            auth_session.revoked_reason = "refresh_token_reuse"
            audit.record(
                session,
                actor,
                action="refresh_token_reuse",
                entity_type="session",
                entity_id=auth_session.id,
            )
            log.warning("refresh_token_reuse", session=str(auth_session.id))
        await session.commit()
        raise _invalid_refresh(
            "the refresh token was already used; the session has been revoked, log in again"
        )
    if auth_session.revoked_at is not None or token.expires_at <= now or not user.is_active:
        await session.rollback()
        raise _invalid_refresh("the session has ended; log in again")
    # The tenant's MFA policy may have changed since login: apply it at the next rotation
    # instead of letting a session live unrestricted for the refresh token's lifetime. Any
    # live session of a user with TOTP passed it at login (enrolment and reset end the
    # others), so only users without TOTP can become pending.
    auth_session.mfa_verified = user.totp_enabled or not await tenants.mfa_required(
        session=session, tenant_id=user.tenant_id, role=user.role
    )
    pair = _issue(session, settings, user, auth_session, now)
    await session.commit()
    return pair


async def logout(*, session: AsyncSession, actor: Actor) -> None:
    """Ends the actor's own login session (its refresh tokens stop working)."""
    assert actor.session_id is not None
    await session.execute(
        update(AuthSession)
        .where(AuthSession.id == actor.session_id, AuthSession.revoked_at.is_(None))
        .values(revoked_at=actor.now(), revoked_reason="logout")
    )
    audit.record(session, actor, action="logout", entity_type="session", entity_id=actor.session_id)
    await session.commit()


async def revoke_sessions(
    *,
    session: AsyncSession,
    user_id: uuid.UUID,
    now: datetime,
    reason: str,
    keep: uuid.UUID | None = None,
) -> None:
    """Ends every live session of the user (but `keep`), in the caller's transaction."""
    stmt = (
        update(AuthSession)
        .where(AuthSession.user_id == user_id, AuthSession.revoked_at.is_(None))
        .values(revoked_at=now, revoked_reason=reason)
    )
    if keep is not None:
        stmt = stmt.where(AuthSession.id != keep)
    await session.execute(stmt)


def enforce_policy(settings: AuthSettings, password: str, email: str, name: str) -> None:
    try:
        check_policy(
            password,
            min_length=settings.min_password_length,
            user_inputs=[email, email.split("@")[0], *name.split()],
        )
    except PasswordPolicyError as exc:
        raise Invalid("password", str(exc), slug="weak-password") from exc


async def change_password(
    *,
    session: AsyncSession,
    actor: Actor,
    user: User,
    settings: AuthSettings,
    current: str,
    new: str,
) -> None:
    if not verify_password(user.password_hash, current):
        raise Forbidden("the current password is wrong", slug="invalid-credentials")
    enforce_policy(settings, new, user.email, user.full_name)
    user.password_hash = hash_password(new)
    await revoke_sessions(
        session=session,
        user_id=user.id,
        now=actor.now(),
        reason="password_changed",
        keep=actor.session_id,
    )
    audit.record(
        session,
        actor,
        action="password_changed",
        entity_type="user",
        entity_id=user.id,
        changes=audit.diff({"password_hash": "old"}, {"password_hash": "new"}),
    )
    await toolkit.commit(session, what="the user")


async def mfa_setup(*, session: AsyncSession, actor: Actor, user: User) -> tuple[str, str]:
    if user.totp_enabled:
        raise Conflict(
            "mfa-already-enabled",
            "two-factor authentication is already on; an admin can reset it",
        )
    secret = pyotp.random_base32()
    user.totp_secret = secret
    audit.record(session, actor, action="mfa_setup_started", entity_type="user", entity_id=user.id)
    await toolkit.commit(session, what="the user")
    uri = pyotp.TOTP(secret).provisioning_uri(name=user.email, issuer_name=TOTP_ISSUER)
    return secret, uri


async def mfa_verify(*, session: AsyncSession, actor: Actor, user: User, code: str) -> list[str]:
    if user.totp_enabled:
        raise Conflict("mfa-already-enabled", "two-factor authentication is already on")
    if not user.totp_secret:
        raise Conflict("mfa-not-started", "call POST /api/v1/auth/mfa/setup first")
    now = actor.now()
    step = _totp_step(user, code, now)
    if step is None:
        raise Invalid(
            "code", "the code does not match; check the device clock", slug="invalid-code"
        )
    user.totp_enabled = True
    user.totp_last_step = step
    codes = [f"{secrets.token_hex(4)}-{secrets.token_hex(4)}" for _ in range(RECOVERY_CODE_COUNT)]
    for code_ in codes:
        session.add(
            RecoveryCode(
                tenant_id=user.tenant_id,
                user_id=user.id,
                code_hash=digest(_normalise_recovery(code_)),
            )
        )
    # Tokens issued before enrolment carried mfa_pending: end those sessions.
    await revoke_sessions(session=session, user_id=user.id, now=now, reason="mfa_enabled")
    audit.record(session, actor, action="mfa_enabled", entity_type="user", entity_id=user.id)
    await toolkit.commit(session, what="the user")
    return codes
