"""Route dependencies: who is calling, in which tenant, and may they. Every route uses one.

One database session per request, shared by the authentication check and the route, bound to
the caller's tenant. The check of the caller's login session (active user, session neither
revoked nor expired, MFA state, role) is cached per process for `auth.session_cache_ttl_s`
seconds: a revocation made through this process takes effect at once (its routes drop the
cached entries), one made through another replica within that bound.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import structlog
from fastapi import FastAPI, Request
from fastapi.routing import APIRoute
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import HTTPConnection

from ctafleet.api.problems import Problem
from ctafleet.api.state import AppState, client_ip, close_with_request, get_state
from ctafleet.auth.models import AuthSession, User
from ctafleet.auth.permissions import OWN_RECORDS_ONLY, Permission, allowed
from ctafleet.auth.tokens import AccessClaims, InvalidToken, decode_access_token
from ctafleet.db import scope
from ctafleet.kernel.context import Actor
from ctafleet.kernel.roles import Role
from ctafleet.observability.metrics import AUTH_FAILURES

BEARER_SCHEME = {
    "type": "http",
    "description": "Access token from POST /api/v1/auth/login",
    "scheme": "bearer",
}

# While MFA enrolment is pending, a token reaches only these routes.
MFA_PENDING_ALLOWED = {Permission.authenticated}
_OWN_ONLY = frozenset(r.value for r in OWN_RECORDS_ONLY)


@dataclass(frozen=True, slots=True)
class LoginState:
    """What the check of a request needs to know of its login session (no secrets)."""

    user_id: uuid.UUID
    tenant_id: uuid.UUID
    role: str
    is_active: bool
    revoked: bool
    expires_at: datetime
    mfa_verified: bool


@dataclass(slots=True)
class Ctx:
    """The request's tenant-scoped database session plus the actor, for authenticated routes."""

    session: AsyncSession
    actor: Actor
    state: AppState

    @property
    def now(self) -> datetime:
        return self.actor.now()

    async def user(self) -> User:
        """The calling user's row (loaded only by the routes that need it)."""
        user = await self.session.get(User, self.actor.user_id)
        if user is None:  # deleted between the check and now
            raise unauthorized("the session has ended; log in again")
        return user

    def forget_logins(self, user_id: uuid.UUID) -> None:
        """Drops this process's cached checks of the user's sessions (after a revocation)."""
        forget_logins(self.state, user_id)


@dataclass
class PublicCtx:
    state: AppState
    client_ip: str
    request_id: str | None


def unauthorized(detail: str, *, rejected: bool = True) -> Problem:
    # Only a token that was presented and refused counts as a failure; a request without one
    # (a browser, a health probe that took the wrong path) is not an attack signal.
    if rejected:
        AUTH_FAILURES.labels(kind="token").inc()
    return Problem(401, "unauthorized", detail, headers={"WWW-Authenticate": "Bearer"})


def forget_logins(state: AppState, user_id: uuid.UUID) -> None:
    cache = state.session_cache
    if cache is None:
        return
    for key, entry in list(cache.items()):
        if entry.user_id == user_id:
            cache.pop(key, None)


async def _login_state(session: AsyncSession, claims: AccessClaims) -> LoginState | None:
    row = (
        await session.execute(
            select(
                User.id,
                User.tenant_id,
                User.role,
                User.is_active,
                AuthSession.revoked_at,
                AuthSession.expires_at,
                AuthSession.mfa_verified,
            )
            .join(AuthSession, AuthSession.user_id == User.id)
            .where(User.id == claims.user_id, AuthSession.id == claims.session_id)
        )
    ).first()
    if row is None:
        return None
    return LoginState(
        user_id=row.id,
        tenant_id=row.tenant_id,
        role=row.role,
        is_active=row.is_active,
        revoked=row.revoked_at is not None,
        expires_at=row.expires_at,
        mfa_verified=row.mfa_verified,
    )


def _bearer_token(request: HTTPConnection) -> str | None:
    scheme, _, token = (request.headers.get("authorization") or "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def _claims(state: AppState, token: str, now: datetime) -> AccessClaims:
    """The token's verified claims. A token seen before (its exact text, so its signature was
    checked then) is not verified again; its times are checked on every request."""
    cache = state.token_cache
    claims = cache.get(token) if cache is not None else None
    try:
        if claims is None:
            claims = decode_access_token(state.settings.auth, token, now)
            if cache is not None:
                cache[token] = claims
        else:
            claims.check_times(now)
    except InvalidToken as exc:
        raise unauthorized("the access token is invalid or expired") from exc
    return claims


async def _admit(
    request: HTTPConnection,
    state: AppState,
    permission: Permission,
    *,
    rate_limit: bool = True,
    token: str | None = None,
) -> tuple[Actor, AsyncSession]:
    """The checks every authenticated route runs, in this order: a token (401), its session
    (401), MFA enrolment (403), the role (403), the rate limit (429). Returns the actor and
    the request's session, bound to the actor's tenant; the caller closes the session."""
    token = token or _bearer_token(request)
    if token is None:
        raise unauthorized("a bearer access token is required", rejected=False)
    now = state.clock.now()
    claims = _claims(state, token, now)
    actor = Actor(
        tenant_id=claims.tenant_id,
        user_id=claims.user_id,
        role=claims.role,
        own_records_only=claims.role in _OWN_ONLY,
        session_id=claims.session_id,
        request_id=getattr(request.state, "request_id", None),
        client_ip=client_ip(request),
        clock=state.clock,
    )
    session = state.db.session(actor)
    try:
        cache = state.session_cache
        login = cache.get(claims.session_id) if cache is not None else None
        if login is None:
            login = await _login_state(session, claims)
            if login is None:
                raise unauthorized("the access token is invalid or expired")
            if cache is not None:
                cache[claims.session_id] = login
        elif login.user_id != claims.user_id or login.tenant_id != claims.tenant_id:
            raise unauthorized("the access token is invalid or expired")
        if not login.is_active or login.revoked or login.expires_at <= now:
            raise unauthorized("the session has ended; log in again")
        # Checked after the session: an ended session is a 401 whatever the token says. The
        # session's flag also covers tokens issued before a policy change reached it.
        if (claims.mfa_pending or not login.mfa_verified) and (
            permission not in MFA_PENDING_ALLOWED
        ):
            raise Problem(
                403,
                "mfa-enrolment-required",
                "your role requires two-factor authentication: enrol at "
                "POST /api/v1/auth/mfa/setup, then log in again",
            )
        # The role is the session's, not the token's: a role change applies at once.
        if not allowed(login.role, permission):
            raise Problem(403, "forbidden", f"your role may not do this ({permission.value})")
        if rate_limit:
            await state.limiter.hit(state.settings.auth.api_rate_limit, "user", str(login.user_id))
    except BaseException:
        await session.close()
        raise
    if login.role != actor.role:
        actor = Actor(
            tenant_id=actor.tenant_id,
            user_id=actor.user_id,
            role=login.role,
            own_records_only=login.role in _OWN_ONLY,
            session_id=actor.session_id,
            request_id=actor.request_id,
            client_ip=actor.client_ip,
            clock=state.clock,
        )
        scope.bind(session, actor)
    return actor, session


async def admit(
    connection: HTTPConnection, permission: Permission, token: str | None
) -> tuple[Actor, AsyncSession]:
    """A WebSocket's checks, the same as `require`'s (401/403 as `Problem`), for a token that
    came in the query or the first message; the caller closes the session."""
    return await _admit(connection, get_state(connection), permission, token=token)


def require(permission: Permission) -> Callable[..., Any]:
    """Dependency for a route that needs `permission`; yields a tenant-scoped `Ctx`."""

    async def dependency(request: Request) -> Ctx:
        state = get_state(request)
        actor, session = await _admit(request, state, permission)
        close_with_request(request, session)
        structlog.contextvars.bind_contextvars(tenant=str(actor.tenant_id), user=str(actor.user_id))
        return Ctx(session=session, actor=actor, state=state)

    dependency.__permission__ = permission  # type: ignore[attr-defined]
    return dependency


async def refuse_before_validation(request: Request) -> None:
    """Raises the 401/403 an authenticated route would answer, if any.

    FastAPI parses and validates a request's body before it runs the route's dependencies, so
    an unauthenticated client sending a malformed body would learn about the schema (422)
    before being told to authenticate. The validation-error handler calls this first.
    """
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    permission = permission_of(route)
    if permission is None or permission is Permission.public:
        return
    _actor, session = await _admit(request, get_state(request), permission, rate_limit=False)
    await session.close()


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


E = TypeVar("E", bound=Callable[..., Any])


def public_endpoint(endpoint: E) -> E:
    """Declares a route anyone may call without a dependency to solve: for the probes
    (`/healthz`, `/readyz`), which load balancers call several times a second."""
    endpoint.__permission__ = Permission.public  # type: ignore[attr-defined]
    return endpoint


def role_values() -> list[str]:
    return [r.value for r in Role]


def permission_of(route: APIRoute) -> Permission | None:
    """The permission a route declares through its `require`/`public` dependency."""
    for dep in route.dependant.dependencies:
        permission = getattr(dep.call, "__permission__", None)
        if permission is not None:
            return permission  # type: ignore[no-any-return]
    return getattr(route.endpoint, "__permission__", None)


def document_bearer(app: FastAPI) -> None:
    """The OpenAPI schema says which operations need the bearer token (Swagger's Authorize).

    The dependency reads the header itself rather than through FastAPI's `HTTPBearer` (one
    dependency fewer to solve on every request), so the scheme is described here.
    """
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()
        schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
        schemes["HTTPBearer"] = BEARER_SCHEME
        for route in app.routes:
            if not isinstance(route, APIRoute) or not route.include_in_schema:
                continue
            permission = permission_of(route)
            if permission is None or permission is Permission.public:
                continue
            operations = schema["paths"].get(route.path_format, {})
            for method in route.methods or ():
                operation = operations.get(method.lower())
                if operation is not None:
                    operation["security"] = [{"HTTPBearer": []}]
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
