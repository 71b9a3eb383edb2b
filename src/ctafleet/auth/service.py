"""Login, token rotation, logout, MFA and users."""

from __future__ import annotations

import secrets
import uuid
from datetime import datetime, timedelta

import pyotp
import structlog
from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.exc import StaleDataError

from ctafleet.api.problems import Problem
from ctafleet.api.state import AppState
from ctafleet.audit import service as audit
from ctafleet.auth.deps import Actor
from ctafleet.auth.models import AuthSession, RecoveryCode, RefreshToken, User
from ctafleet.auth.passwords import (
    PasswordPolicyError,
    check_policy,
    hash_password,
    needs_rehash,
    verify_password,
)
from ctafleet.auth.schemas import TokenPair, UserCreate, UserUpdate
from ctafleet.auth.tokens import AccessClaims, digest, issue_access_token, new_secret
from ctafleet.config import Settings
from ctafleet.db.tenancy import get_in_tenant
from ctafleet.observability.metrics import AUTH_FAILURES
from ctafleet.tenants.models import Tenant

log = structlog.get_logger("ctafleet.auth")

RECOVERY_CODE_COUNT = 10
TOTP_ISSUER = "CTAFleet"


def _invalid_credentials() -> Problem:
    return Problem(401, "invalid-credentials", "e-mail, password or code is wrong")


def _invalid_refresh(detail: str) -> Problem:
    AUTH_FAILURES.labels(kind="refresh").inc()
    return Problem(401, "invalid-refresh-token", detail)


def _system_actor(user: User, ip: str | None, request_id: str | None) -> Actor:
    return Actor(
        tenant_id=user.tenant_id,
        user_id=user.id,
        role=user.role,
        client_ip=ip,
        request_id=request_id,
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
        raise Problem(
            401,
            "mfa-code-required",
            "this account uses two-factor authentication: send totp_code",
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


async def _issue(
    session: AsyncSession, state: AppState, user: User, auth_session: AuthSession, now: datetime
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
        state.settings.auth,
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
    state: AppState,
    *,
    email: str,
    password: str,
    totp_code: str | None,
    ip: str,
    request_id: str | None,
) -> TokenPair:
    now = state.clock.now()
    async with state.db.system_session() as session:
        user = (await session.scalars(select(User).where(User.email == email.lower()))).first()
        password_ok = verify_password(user.password_hash if user else None, password)
        if user is None or not password_ok or not user.is_active:
            if user is not None:
                audit.record(
                    session,
                    _system_actor(user, ip, request_id),
                    action="login_failed",
                    entity_type="user",
                    entity_id=user.id,
                )
                await session.commit()
            log.info("login_failed", reason="credentials")
            AUTH_FAILURES.labels(kind="password").inc()
            raise _invalid_credentials()
        actor = _system_actor(user, ip, request_id)
        if user.totp_enabled:
            try:
                method = await _check_second_factor(session, user, totp_code, now)
            except Problem as exc:
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
                    session,
                    actor,
                    action="recovery_code_used",
                    entity_type="user",
                    entity_id=user.id,
                )
        required = await _mfa_required(session, user)
        # Bookkeeping goes through a bulk UPDATE: bumping the row's version here would make
        # concurrent logins of one user fail (500) and an admin's If-Match go stale on every
        # login of the user being edited.
        bookkeeping: dict[str, object] = {"last_login_at": now}
        if needs_rehash(user.password_hash):
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
            expires_at=now + timedelta(seconds=state.settings.auth.refresh_token_ttl_s),
            mfa_verified=user.totp_enabled or not required,
            client_ip=ip,
        )
        session.add(auth_session)
        pair = await _issue(session, state, user, auth_session, now)
        audit.record(session, actor, action="login", entity_type="user", entity_id=user.id)
        await session.commit()
        return pair


async def _mfa_required(session: AsyncSession, user: User) -> bool:
    """Does the tenant's policy require a second factor for the user's role?"""
    tenant = await session.get(Tenant, user.tenant_id)
    return tenant is not None and user.role in (tenant.mfa_required_roles or [])


async def refresh(
    state: AppState, *, refresh_token: str, ip: str, request_id: str | None
) -> TokenPair:
    now = state.clock.now()
    async with state.db.system_session() as session:
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
        actor = _system_actor(user, ip, request_id)
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
        auth_session.mfa_verified = user.totp_enabled or not await _mfa_required(session, user)
        pair = await _issue(session, state, user, auth_session, now)
        await session.commit()
        return pair


async def revoke_session(
    session: AsyncSession, actor: Actor, session_id: uuid.UUID, now: datetime, reason: str
) -> None:
    await session.execute(
        update(AuthSession)
        .where(AuthSession.id == session_id, AuthSession.revoked_at.is_(None))
        .values(revoked_at=now, revoked_reason=reason)
    )
    audit.record(session, actor, action="logout", entity_type="session", entity_id=session_id)
    await session.commit()


async def revoke_all_sessions(
    session: AsyncSession,
    user_id: uuid.UUID,
    now: datetime,
    reason: str,
    keep: uuid.UUID | None = None,
) -> None:
    stmt = (
        update(AuthSession)
        .where(AuthSession.user_id == user_id, AuthSession.revoked_at.is_(None))
        .values(revoked_at=now, revoked_reason=reason)
    )
    if keep is not None:
        stmt = stmt.where(AuthSession.id != keep)
    await session.execute(stmt)


async def change_password(
    session: AsyncSession,
    actor: Actor,
    user: User,
    settings: Settings,
    *,
    current: str,
    new: str,
    now: datetime,
) -> None:
    if not verify_password(user.password_hash, current):
        raise Problem(403, "invalid-credentials", "the current password is wrong")
    _enforce_policy(settings, new, user.email, user.full_name)
    user.password_hash = hash_password(new)
    await revoke_all_sessions(session, user.id, now, "password_changed", keep=actor.session_id)
    audit.record(
        session,
        actor,
        action="password_changed",
        entity_type="user",
        entity_id=user.id,
        changes=audit.diff({"password_hash": "old"}, {"password_hash": "new"}),
    )
    await _commit_versioned(session)


def _enforce_policy(settings: Settings, password: str, email: str, name: str) -> None:
    try:
        check_policy(
            password,
            min_length=settings.auth.min_password_length,
            user_inputs=[email, email.split("@")[0], *name.split()],
        )
    except PasswordPolicyError as exc:
        raise Problem(422, "weak-password", str(exc)) from exc


async def mfa_setup(session: AsyncSession, actor: Actor, user: User) -> tuple[str, str]:
    if user.totp_enabled:
        raise Problem(
            409,
            "mfa-already-enabled",
            "two-factor authentication is already on; an admin can reset it",
        )
    secret = pyotp.random_base32()
    user.totp_secret = secret
    audit.record(session, actor, action="mfa_setup_started", entity_type="user", entity_id=user.id)
    await _commit_versioned(session)
    uri = pyotp.TOTP(secret).provisioning_uri(name=user.email, issuer_name=TOTP_ISSUER)
    return secret, uri


async def mfa_verify(
    session: AsyncSession, actor: Actor, user: User, code: str, now: datetime
) -> list[str]:
    if user.totp_enabled:
        raise Problem(409, "mfa-already-enabled", "two-factor authentication is already on")
    if not user.totp_secret:
        raise Problem(409, "mfa-not-started", "call POST /api/v1/auth/mfa/setup first")
    step = _totp_step(user, code, now)
    if step is None:
        raise Problem(422, "invalid-code", "the code does not match; check the device clock")
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
    await revoke_all_sessions(session, user.id, now, "mfa_enabled")
    audit.record(session, actor, action="mfa_enabled", entity_type="user", entity_id=user.id)
    await _commit_versioned(session)
    return codes


# --- users -------------------------------------------------------------------------------


async def create_user(
    session: AsyncSession, actor: Actor, settings: Settings, data: UserCreate
) -> User:
    _enforce_policy(settings, data.password, str(data.email), data.full_name)
    email = str(data.email).lower()
    exists = await session.scalar(select(func.count()).select_from(User).where(User.email == email))
    if exists:
        raise Problem(409, "email-taken", "a user with this e-mail already exists")
    user = User(
        tenant_id=actor.tenant_id,
        email=email,
        full_name=data.full_name,
        role=data.role,
        password_hash=hash_password(data.password),
    )
    session.add(user)
    try:
        await session.flush()
    except IntegrityError as exc:
        await session.rollback()
        raise Problem(409, "email-taken", "a user with this e-mail already exists") from exc
    audit.record_created(session, actor, "user", user)
    await session.commit()
    return user


async def update_user(
    session: AsyncSession,
    actor: Actor,
    user_id: uuid.UUID,
    data: UserUpdate,
    if_match: int | None,
    now: datetime,
) -> User:
    user = await get_in_tenant(session, actor, User, user_id, entity="user")
    check_version(user.version, if_match)
    before = audit.snapshot(user)
    # An explicit null means "leave as is"; a field sent with its current value is no change
    # (clients that send the whole object back must not end sessions or trip the self-check).
    changes = {
        key: value
        for key, value in data.model_dump(exclude_unset=True).items()
        if value is not None and value != getattr(user, key)
    }
    if user.id == actor.user_id and ("role" in changes or changes.get("is_active") is False):
        raise Problem(
            409,
            "cannot-demote-self",
            "you cannot change your own role or deactivate yourself; ask another admin",
        )
    if not changes:
        return user  # nothing to write, and nothing worth an audit event
    for key, value in changes.items():
        setattr(user, key, value)
    if changes.get("is_active") is False or "role" in changes:
        await revoke_all_sessions(session, user.id, now, "user_changed")
    audit.record(
        session,
        actor,
        action="update",
        entity_type="user",
        entity_id=user.id,
        changes=audit.diff(before, audit.snapshot(user)),
    )
    await _commit_versioned(session, if_match)
    return user


async def reset_mfa(session: AsyncSession, actor: Actor, user_id: uuid.UUID, now: datetime) -> User:
    user = await get_in_tenant(session, actor, User, user_id, entity="user")
    user.totp_enabled = False
    user.totp_secret = None
    user.totp_last_step = None
    await session.execute(
        update(RecoveryCode)
        .where(RecoveryCode.user_id == user.id, RecoveryCode.used_at.is_(None))
        .values(used_at=now)
    )
    await revoke_all_sessions(session, user.id, now, "mfa_reset")
    audit.record(session, actor, action="mfa_reset", entity_type="user", entity_id=user.id)
    await _commit_versioned(session)
    return user


async def _commit_versioned(session: AsyncSession, if_match: int | None = None) -> None:
    """Commit a change to a versioned row; losing a race to another writer is a 412/409."""
    try:
        await session.commit()
    except StaleDataError as exc:
        await session.rollback()
        if if_match is not None:
            raise Problem(
                412,
                "precondition-failed",
                "the object changed while this request ran; fetch it again and retry",
            ) from exc
        raise Problem(
            409,
            "concurrent-update",
            "the object was changed by another request at the same time; retry",
        ) from exc


def check_version(current: int, if_match: int | None) -> None:
    if if_match is not None and if_match != current:
        raise Problem(
            412,
            "precondition-failed",
            f"the object changed since you read it (version {current}, If-Match {if_match}); "
            "fetch it again and retry",
        )
