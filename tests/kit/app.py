"""The app under test: settings per backend, an httpx client on the ASGI app, tenants with a
user of every role, and the app's routes."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from ctafleet.app import create_app
from ctafleet.auth.schemas import UserCreate
from ctafleet.auth.users import create_user
from ctafleet.config import Settings
from ctafleet.db.engine import Database
from ctafleet.kernel.clock import FrozenClock
from ctafleet.kernel.context import Actor
from ctafleet.kernel.roles import Role
from ctafleet.tenants.service import create_tenant

PASSWORD = "Correct-Horse-Battery-7"


@dataclass
class PgDatabase:
    name: str
    owner_url: str  # superuser: runs migrations
    app_url: str  # plain role without BYPASSRLS: what the application uses
    app_role: str


@dataclass
class Backend:
    name: str
    url: str
    admin_url: str
    pg: PgDatabase | None = None


def make_settings(backend: Backend, data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "environment": "test",
        "data_dir": data_dir,
        "database": {"url": backend.url, "admin_url": backend.admin_url},
        "auth": {
            "secret_key": secrets.token_urlsafe(48),
            "login_rate_limit": "10000/minute",
            "api_rate_limit": "100000/minute",
        },
        "observability": {"log_json": True, "log_level": "WARNING"},
        # The clock is frozen and shared: a test that wants the offline sweep calls it
        # (`Worker.sweep`), so it never reports another test's devices in between.
        "telemetry": {"offline_sweep_s": 0},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(values.get(key), dict):
            values[key] = {**values[key], **value}
        else:
            values[key] = value
    return Settings(**values)


@dataclass
class Api:
    """An httpx client on the ASGI app, with helpers to log in as a role of a tenant."""

    client: httpx.AsyncClient
    app: Any
    settings: Settings
    clock: FrozenClock
    backend: Backend

    @property
    def db(self) -> Database:
        db: Database = self.app.state.ctafleet.db
        return db

    async def tenant(self, **kwargs: Any) -> TenantUsers:
        return await make_tenant(self, **kwargs)


@dataclass
class TenantUsers:
    id: uuid.UUID
    slug: str
    users: dict[str, Any] = field(default_factory=dict)  # role -> User
    tokens: dict[str, str] = field(default_factory=dict)  # role -> access token

    def headers(self, role: str = "admin") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    def actor(self, role: str = "admin", clock: Any = None) -> Actor:
        user = self.users[role]
        if clock is None:
            return Actor(tenant_id=self.id, user_id=user.id, role=role)
        return Actor(tenant_id=self.id, user_id=user.id, role=role, clock=clock)


async def make_tenant(api: Api, roles: list[str] | None = None, login: bool = True) -> TenantUsers:
    slug = f"t-{uuid.uuid4().hex[:12]}"
    async with api.db.system_session() as session:
        tenant = await create_tenant(session=session, slug=slug, name=f"Tenant {slug}")
    result = TenantUsers(id=tenant.id, slug=slug)
    system = Actor.system(tenant.id, clock=api.clock)
    async with api.db.session(system) as session:
        for role in roles or [r.value for r in Role]:
            user = await create_user(
                session=session,
                actor=system,
                settings=api.settings.auth,
                data=UserCreate(
                    email=f"{role}.{slug}@example.org",
                    role=role,
                    password=PASSWORD,
                    full_name=f"{role} of {slug}",
                ),
            )
            result.users[role] = user
    if login:
        for role, user in result.users.items():
            r = await api.client.post(
                "/api/v1/auth/login", json={"email": user.email, "password": PASSWORD}
            )
            assert r.status_code == 200, r.text
            result.tokens[role] = r.json()["access_token"]
    return result


@asynccontextmanager
async def own_app(
    backend: Backend,
    data_dir: Path,
    *,
    client_ip: str = "127.0.0.1",
    base_url: str = "http://testserver",
    settings: Settings | None = None,
    clock: FrozenClock | None = None,
    **overrides: Any,
) -> AsyncIterator[Api]:
    """A separate app instance on the shared database, closed (engine, Redis) afterwards.

    Replicas of one deployment share `settings` (above all the signing key); pass the same one.
    """
    settings = settings or make_settings(backend, data_dir, **overrides)
    clock = clock or FrozenClock()
    app = create_app(settings, clock=clock)
    transport = httpx.ASGITransport(app=app, client=(client_ip, 50123))
    try:
        async with httpx.AsyncClient(transport=transport, base_url=base_url) as client:
            yield Api(client=client, app=app, settings=settings, clock=clock, backend=backend)
    finally:
        state = app.state.ctafleet
        await state.db.dispose()
        if state.redis is not None:
            await state.redis.aclose()


@dataclass(frozen=True)
class RouteInfo:
    path: str  # full path, with the prefixes of every included router
    methods: frozenset[str]
    route: Any  # the route as declared (an APIRoute: endpoint, body_field, dependencies)


def app_routes(app: Any) -> list[RouteInfo]:
    """Every HTTP route of the app, flattened through included routers."""
    from fastapi.routing import iter_route_contexts

    out = []
    for ctx in iter_route_contexts(app.routes):
        methods = ctx.methods
        if not methods or ctx.path is None:
            continue  # mounts (static files)
        out.append(RouteInfo(ctx.path, frozenset(methods), ctx.original_route))
    return out
