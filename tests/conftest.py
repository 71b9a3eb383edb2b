"""Test fixtures: the app on SQLite and on a real PostgreSQL, tenants with users of every role.

PostgreSQL and Redis come from CTAFLEET_TEST_DATABASE_URL / CTAFLEET_TEST_REDIS_URL. Without
them (or when unreachable) their tests skip with the reason; CTAFLEET_REQUIRE_SERVICES=1 turns
that skip into a failure, as CI does.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from sqlalchemy.engine import make_url

from ctafleet.app import create_app
from ctafleet.auth import passwords
from ctafleet.auth.deps import Actor
from ctafleet.auth.permissions import Role
from ctafleet.auth.schemas import UserCreate
from ctafleet.auth.service import create_user
from ctafleet.clock import FrozenClock
from ctafleet.config import Settings
from ctafleet.db.engine import Database
from ctafleet.db.migrate import upgrade
from ctafleet.tenants.service import create_tenant

passwords.use_test_parameters()
REQUIRE_SERVICES = os.environ.get("CTAFLEET_REQUIRE_SERVICES") == "1"
PASSWORD = "Correct-Horse-Battery-7"


def service_unavailable(reason: str) -> None:
    """Skip, or fail when CI requires the real services."""
    if REQUIRE_SERVICES:
        pytest.fail(f"CTAFLEET_REQUIRE_SERVICES=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def asyncpg_url(url: str, **parts: Any) -> str:
    u = make_url(url).set(drivername="postgresql+asyncpg", **parts)
    return u.render_as_string(hide_password=False)


@dataclass
class PgServer:
    admin_url: str  # a superuser on the server's maintenance database

    async def execute(self, *statements: str, database: str | None = None) -> None:
        import asyncpg

        u = make_url(self.admin_url)
        conn = await asyncpg.connect(
            host=u.host or "127.0.0.1",
            port=u.port or 5432,
            user=u.username or "postgres",
            password=u.password,
            database=database or u.database or "postgres",
        )
        try:
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.close()


@pytest.fixture(scope="session")
def pg_server() -> PgServer:
    url = os.environ.get("CTAFLEET_TEST_DATABASE_URL")
    if not url:
        service_unavailable("CTAFLEET_TEST_DATABASE_URL is not set (PostgreSQL tests)")
    server = PgServer(url)  # type: ignore[arg-type]
    try:
        asyncio.run(server.execute("SELECT 1"))
    except Exception as exc:
        service_unavailable(f"PostgreSQL at CTAFLEET_TEST_DATABASE_URL unreachable: {exc}")
    return server


@dataclass
class PgDatabase:
    name: str
    owner_url: str  # superuser: runs migrations
    app_url: str  # plain role without BYPASSRLS: what the application uses
    app_role: str


@pytest.fixture(scope="session")
def fresh_pg(pg_server: PgServer) -> Iterator[Any]:
    """Factory: a new database and application role, dropped at the end of the session."""
    created: list[PgDatabase] = []

    def make() -> PgDatabase:
        suffix = uuid.uuid4().hex[:10]
        name, role = f"ctafleet_test_{suffix}", f"ctafleet_app_{suffix}"
        asyncio.run(
            pg_server.execute(
                f"CREATE DATABASE {name}",
                f"CREATE ROLE {role} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE",
            )
        )
        db = PgDatabase(
            name=name,
            owner_url=asyncpg_url(pg_server.admin_url, database=name),
            app_url=asyncpg_url(pg_server.admin_url, database=name, username=role, password=None),
            app_role=role,
        )
        created.append(db)
        return db

    yield make
    for db in created:
        asyncio.run(
            pg_server.execute(
                f"DROP DATABASE IF EXISTS {db.name} WITH (FORCE)",
                f"DROP ROLE IF EXISTS {db.app_role}",
            )
        )


@dataclass
class Backend:
    name: str
    url: str
    admin_url: str
    pg: PgDatabase | None = None


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Backend:
    """One migrated database per backend per test worker; tests isolate by tenant."""
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("sqlite") / "ctafleet.db"
        url = f"sqlite+aiosqlite:///{path}"
        asyncio.run(upgrade(url))
        return Backend("sqlite", url, url)
    pg = request.getfixturevalue("fresh_pg")()
    asyncio.run(upgrade(pg.owner_url, app_role=pg.app_role))
    return Backend("postgres", pg.app_url, pg.owner_url, pg)


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

    def actor(self, role: str = "admin") -> Actor:
        user = self.users[role]
        return Actor(tenant_id=self.id, user_id=user.id, role=role)


async def make_tenant(api: Api, roles: list[str] | None = None, login: bool = True) -> TenantUsers:
    slug = f"t-{uuid.uuid4().hex[:12]}"
    async with api.db.system_session() as session:
        tenant = await create_tenant(session, slug=slug, name=f"Tenant {slug}")
    result = TenantUsers(id=tenant.id, slug=slug)
    async with api.db.tenant_session(tenant.id) as session:
        system = Actor(tenant_id=tenant.id, user_id=None, role="system")
        for role in roles or [r.value for r in Role]:
            user = await create_user(
                session,
                system,
                api.settings,
                UserCreate(
                    email=f"{role}.{slug}@example.org",
                    role=role,
                    password=PASSWORD,  # type: ignore[arg-type]
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


@pytest_asyncio.fixture(scope="session")
async def session_api(
    backend: Backend, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Api]:
    settings = make_settings(backend, tmp_path_factory.mktemp("data"))
    clock = FrozenClock()
    app = create_app(settings, clock=clock)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield Api(client=client, app=app, settings=settings, clock=clock, backend=backend)
    await app.state.ctafleet.db.dispose()


@pytest_asyncio.fixture
async def api(session_api: Api) -> Api:
    return session_api


@pytest_asyncio.fixture
async def tenant(api: Api) -> TenantUsers:
    return await api.tenant()


@pytest.fixture
def redis_url() -> str:
    url = os.environ.get("CTAFLEET_TEST_REDIS_URL")
    if not url:
        service_unavailable("CTAFLEET_TEST_REDIS_URL is not set (Redis tests)")
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except Exception as exc:
        service_unavailable(f"Redis at CTAFLEET_TEST_REDIS_URL unreachable: {exc}")
    return url  # type: ignore[return-value]


# --- builders for fleet objects ----------------------------------------------------------

VALID_VINS = ["1M8GDM9AXKP042788", "11111111111111111", "1HGCM82633A004352", "5YJSA1E10HF000316"]


def vehicle_body(n: int | None = None, **overrides: Any) -> dict[str, Any]:
    import random

    from ctafleet.demo import make_vin

    n = n if n is not None else random.randint(0, 10**9)
    body = {
        "unit_number": f"U-{n}",
        "vin": make_vin(random.Random(n)),
        "plate": f"P{n % 10**8}",
        "plate_jurisdiction": "US-IL",
        "make": "Ford",
        "model": "Transit",
        "year": 2022,
        "vehicle_type": "van",
        "fuel_type": "gasoline",
        "odometer_m": 1000,
    }
    body.update(overrides)
    return body


def driver_body(n: int | None = None, **overrides: Any) -> dict[str, Any]:
    import random

    n = n if n is not None else random.randint(0, 10**9)
    body = {
        "first_name": "Ada",
        "last_name": f"Driver{n}",
        "employee_number": f"E{n}",
        "licence_number": f"L{n}",
        "licence_class": "D",
        "licence_jurisdiction": "US-IL",
        "licence_expiry": "2030-01-01",
    }
    body.update(overrides)
    return body


# --- the app's routes --------------------------------------------------------------------


@dataclass(frozen=True)
class RouteInfo:
    path: str  # full path, with the prefixes of every included router
    methods: frozenset[str]
    route: Any  # the route as declared (an APIRoute: endpoint, body_field, dependencies)


def app_routes(app: Any) -> list[RouteInfo]:
    """Every HTTP route of the app, flattened through included routers.

    `app.routes` no longer lists included routers' routes directly; FastAPI's route contexts do.
    """
    from fastapi.routing import iter_route_contexts

    out = []
    for ctx in iter_route_contexts(app.routes):
        methods = ctx.methods
        if not methods or ctx.path is None:
            continue  # mounts (static files)
        out.append(RouteInfo(ctx.path, frozenset(methods), ctx.original_route))
    return out
