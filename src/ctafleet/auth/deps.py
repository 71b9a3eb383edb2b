"""Route dependencies: who is calling, in which tenant, and may they. Every route uses one."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ctafleet.api.problems import Problem
from ctafleet.api.state import AppState, client_ip, get_state
from ctafleet.auth.models import AuthSession, User
from ctafleet.auth.permissions import OWN_RECORDS_ONLY, Permission, Role, allowed
from ctafleet.auth.tokens import InvalidToken, decode_access_token
from ctafleet.observability.metrics import AUTH_FAILURES

bearer = HTTPBearer(auto_error=False, description="Access token from POST /api/v1/auth/login")

# While MFA enrolment is pending, a token reaches only these routes.
MFA_PENDING_ALLOWED = {Permission.authenticated}


@dataclass(frozen=True)
class Actor:
    """The caller, as services see it."""

    tenant_id: uuid.UUID
    user_id: uuid.UUID | None
    role: str
    session_id: uuid.UUID | None = None
    request_id: str | None = None
    client_ip: str | None = None

    @property
    def own_records_only(self) -> bool:
        return self.role in {r.value for r in OWN_RECORDS_ONLY}


@dataclass
class Ctx:
    """A tenant-scoped database session plus the actor, handed to every authenticated route."""

    session: AsyncSession
    actor: Actor
    state: AppState
    user: User

    @property
    def now(self) -> datetime:
        return self.state.clock.now()


@dataclass
class PublicCtx:
    state: AppState
    client_ip: str
    request_id: str | None


def _unauthorized(detail: str, *, rejected: bool = True) -> Problem:
    # Only a token that was presented and refused counts as a failure; a request without one
    # (a browser, a health probe that took the wrong path) is not an attack signal.
    if rejected:
        AUTH_FAILURES.labels(kind="token").inc()
    return Problem(401, "unauthorized", detail, headers={"WWW-Authenticate": "Bearer"})


def require(permission: Permission) -> Callable[..., Any]:
    """Dependency for a route that needs `permission`; yields a tenant-scoped `Ctx`."""

    async def dependency(
        request: Request,
        credentials: HTTPAuthorizationCredentials | None = Depends(bearer),
    ) -> AsyncIterator[Ctx]:
        state = get_state(request)
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise _unauthorized("a bearer access token is required", rejected=False)
        now = state.clock.now()
        try:
            claims = decode_access_token(state.settings.auth, credentials.credentials, now)
        except InvalidToken as exc:
            raise _unauthorized("the access token is invalid or expired") from exc
        async with state.db.tenant_session(claims.tenant_id) as session:
            row = (
                await session.execute(
                    select(User, AuthSession)
                    .join(AuthSession, AuthSession.user_id == User.id)
                    .where(
                        User.id == claims.user_id,
                        User.tenant_id == claims.tenant_id,
                        AuthSession.id == claims.session_id,
                    )
                )
            ).first()
            if row is None:
                raise _unauthorized("the access token is invalid or expired")
            user, auth_session = row
            if (
                not user.is_active
                or auth_session.revoked_at is not None
                or auth_session.expires_at <= now
            ):
                raise _unauthorized("the session has ended; log in again")
            # Checked after the session: an ended session is a 401 whatever the token says. The
            # session's flag also covers tokens issued before a policy change reached it.
            pending = claims.mfa_pending or not auth_session.mfa_verified
            if pending and permission not in MFA_PENDING_ALLOWED:
                raise Problem(
                    403,
                    "mfa-enrolment-required",
                    "your role requires two-factor authentication: enrol at "
                    "POST /api/v1/auth/mfa/setup, then log in again",
                )
            if not allowed(user.role, permission):
                raise Problem(403, "forbidden", f"your role may not do this ({permission.value})")
            await state.limiter.hit(state.settings.auth.api_rate_limit, "user", str(user.id))
            actor = Actor(
                tenant_id=user.tenant_id,
                user_id=user.id,
                role=user.role,
                session_id=auth_session.id,
                request_id=getattr(request.state, "request_id", None),
                client_ip=client_ip(request),
            )
            structlog.contextvars.bind_contextvars(tenant=str(user.tenant_id), user=str(user.id))
            # The read that loaded the user is finished; the route starts its own transaction.
            await session.commit()
            yield Ctx(session=session, actor=actor, state=state, user=user)

    dependency.__permission__ = permission  # type: ignore[attr-defined]
    return dependency


def public(*, rate_limited: bool = False) -> Callable[..., Any]:
    """Dependency for a route anyone may call; auth endpoints are rate limited per client IP."""

    async def dependency(request: Request) -> PublicCtx:
        state = get_state(request)
        ip = client_ip(request)
        if rate_limited:
            await state.limiter.hit(state.settings.auth.login_rate_limit, "auth-ip", ip)
        return PublicCtx(
            state=state, client_ip=ip, request_id=getattr(request.state, "request_id", None)
        )

    dependency.__permission__ = Permission.public  # type: ignore[attr-defined]
    return dependency


def role_values() -> list[str]:
    return [r.value for r in Role]
