"""Test fixtures: the app on SQLite and on a real PostgreSQL, tenants with users of every role.

PostgreSQL and Redis come from CTAFLEET_TEST_DATABASE_URL / CTAFLEET_TEST_REDIS_URL. Without
them (or when unreachable) their tests skip with the reason; CTAFLEET_REQUIRE_SERVICES=1 turns
that skip into a failure, as CI does.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any, NoReturn

import httpx
import pytest
import pytest_asyncio
from sqlalchemy.engine import make_url

from ctafleet.app import create_app
from ctafleet.auth import passwords
from ctafleet.db.migrate import upgrade
from ctafleet.kernel.clock import FrozenClock
from tests.kit.app import Api, Backend, PgDatabase, TenantUsers, make_settings

passwords.use_test_parameters()
REQUIRE_SERVICES = os.environ.get("CTAFLEET_REQUIRE_SERVICES") == "1"


def service_unavailable(reason: str) -> NoReturn:
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
    server = PgServer(url)
    try:
        asyncio.run(server.execute("SELECT 1"))
    except Exception as exc:
        service_unavailable(f"PostgreSQL at CTAFLEET_TEST_DATABASE_URL unreachable: {exc}")
    return server


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
def queue_prefix(redis_url: str) -> Iterator[str]:
    """A telemetry queue prefix of the test's own; its Redis keys are deleted afterwards."""
    import redis

    prefix = f"test:{uuid.uuid4().hex[:10]}"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(f"{prefix}:*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def mqtt_url() -> str:
    """The test broker (Mosquitto), checked reachable."""
    import socket

    from ctafleet.telematics.mqtt_url import parse_broker_url

    url = os.environ.get("CTAFLEET_TEST_MQTT_URL")
    if not url:
        service_unavailable("CTAFLEET_TEST_MQTT_URL is not set (MQTT tests)")
    broker = parse_broker_url(url)
    try:
        socket.create_connection((broker.host, broker.port), timeout=2).close()
    except OSError as exc:
        service_unavailable(f"no MQTT broker at CTAFLEET_TEST_MQTT_URL: {exc}")
    return url


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
    return url
