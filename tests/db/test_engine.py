"""Engine behaviour: one thread hop per SQLite statement, PostgreSQL connections pinged only
after they sat idle, and the columns-only read path keeping the tenant filter."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from ctafleet.config import Settings
from ctafleet.db import toolkit
from ctafleet.db.engine import Database
from ctafleet.fleet.vehicles.models import Vehicle
from tests.conftest import PgServer
from tests.kit.app import Api
from tests.kit.factories import new_vehicle


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_sqlite_reads_cost_one_thread_hop(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    import aiosqlite.core

    t = await api.tenant(roles=["admin"])
    await new_vehicle(api, t)
    calls: list[str] = []
    original: Any = aiosqlite.core.Connection._execute

    async def counted(self: Any, fn: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(getattr(fn, "__qualname__", repr(fn)))
        return await original(self, fn, *args, **kwargs)

    monkeypatch.setattr(aiosqlite.core.Connection, "_execute", counted)
    async with api.db.session(t.actor()) as session:
        rows = (await session.execute(select(Vehicle.id, Vehicle.vin))).all()
    assert len(rows) == 1
    # The statement; a rollback of a transaction a read never began costs nothing.
    assert len(calls) == 1, calls


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_sqlite_writes_report_rowcount_and_errors(api: Api) -> None:
    db = Database(api.backend.url)
    try:
        async with db.engine.begin() as conn:
            await conn.execute(text("CREATE TEMP TABLE probe (k INTEGER PRIMARY KEY, v TEXT)"))
            await conn.execute(
                text("INSERT INTO probe (k, v) VALUES (:k, :v)"),
                [{"k": i, "v": f"x{i}"} for i in range(5)],
            )
            result = await conn.execute(text("UPDATE probe SET v = 'y' WHERE k < 3"))
            assert result.rowcount == 3
            with pytest.raises(IntegrityError):
                await conn.execute(text("INSERT INTO probe (k, v) VALUES (1, 'dup')"))
    finally:
        await db.dispose()


async def test_columns_read_keeps_the_tenant_filter(api: Api) -> None:
    a = await api.tenant(roles=["admin"])
    b = await api.tenant(roles=["admin"])
    mine = {(await new_vehicle(api, a))["id"] for _ in range(2)}
    await new_vehicle(api, b)
    async with api.db.session(a.actor()) as session:
        rows = await toolkit.rows(session, select(Vehicle.id, Vehicle.tenant_id))
        assert {str(r.id) for r in rows} == mine
        assert {r.tenant_id for r in rows} == {a.id}
        # An entity select reads the table's columns, filtered the same way.
        assert {str(r.id) for r in await toolkit.rows(session, select(Vehicle))} == mine
    async with api.db.system_session() as session:
        everyone = await toolkit.rows(session, select(Vehicle.tenant_id))
        assert {a.id, b.id} <= {r.tenant_id for r in everyone}


async def _backend_pid(db: Database) -> int:
    async with db.engine.connect() as conn:
        return int(await conn.scalar(text("SELECT pg_backend_pid()")))


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_a_connection_dropped_while_idle_is_replaced(api: Api, pg_server: PgServer) -> None:
    settings = Settings(
        environment="test",
        database={"url": api.backend.admin_url, "ping_after_idle_s": 0.01, "pool_size": 1},
    )
    db = Database(settings.database_url, settings)
    try:
        pid = await _backend_pid(db)
        await pg_server.execute(f"SELECT pg_terminate_backend({pid})")
        await asyncio.sleep(0.05)  # idle for longer than the threshold
        assert await _backend_pid(db) != pid  # pinged, found dead, replaced: no error
    finally:
        await db.dispose()


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_a_connection_in_steady_use_is_not_pinged(api: Api, pg_server: PgServer) -> None:
    """The other side of the bargain, shown: within the idle threshold a dropped connection is
    found by the query that uses it (which fails), not by a ping before every request."""
    settings = Settings(
        environment="test",
        database={"url": api.backend.admin_url, "ping_after_idle_s": 3600, "pool_size": 1},
    )
    db = Database(settings.database_url, settings)
    try:
        pid = await _backend_pid(db)
        await pg_server.execute(f"SELECT pg_terminate_backend({pid})")
        with pytest.raises(DBAPIError):
            await _backend_pid(db)
        assert await _backend_pid(db) != pid  # the pool replaced it for the next request
    finally:
        await db.dispose()


@pytest.mark.parametrize(("pool", "expected"), [({}, 2), ({"pool_size": 3}, 3)])
def test_sqlite_pool_settings_are_honoured(
    tmp_path: Path, pool: dict[str, int], expected: int
) -> None:
    settings = Settings(environment="test", database={"url": f"sqlite:///{tmp_path}/p.db", **pool})
    db = Database(settings.database_url, settings)
    assert db.engine.pool.size() == expected  # type: ignore[attr-defined]
