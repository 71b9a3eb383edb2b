"""Row-level security on PostgreSQL: the second wall, seen from the application's own role."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from ctafleet.db.base import tenant_owned_tables
from ctafleet.db.scope import tenant_of
from ctafleet.fleet.vehicles.models import Vehicle
from tests.kit.app import Api, TenantUsers
from tests.kit.factories import vehicle_body

# Row-level security exists on PostgreSQL only: these tests run on that backend alone.
pytestmark = pytest.mark.parametrize("backend", ["postgres"], indirect=True)


@pytest.fixture
async def app_engine(api: Api) -> AsyncIterator[AsyncEngine]:
    assert api.backend.pg is not None
    engine = create_async_engine(api.backend.pg.app_url, poolclass=NullPool)
    yield engine
    await engine.dispose()


async def _scope(conn: AsyncConnection, tenant: TenantUsers | None) -> None:
    if tenant is not None:
        await conn.execute(
            text("SELECT set_config('ctafleet.tenant_id', :t, true)"), {"t": str(tenant.id)}
        )


async def _execute(
    engine: AsyncEngine, tenant: TenantUsers | None, sql: str, **params: str
) -> None:
    """One statement in its own transaction, scoped to the tenant."""
    async with engine.begin() as conn:
        await _scope(conn, tenant)
        await conn.execute(text(sql), params)


async def _vehicle_tenants(engine: AsyncEngine, tenant: TenantUsers | None) -> set[str]:
    async with engine.begin() as conn:
        await _scope(conn, tenant)
        rows = (await conn.execute(text("SELECT tenant_id FROM vehicles"))).all()
    return {str(r[0]) for r in rows}


async def test_unfiltered_queries_see_only_the_scoped_tenant(
    api: Api, app_engine: AsyncEngine
) -> None:
    a = await api.tenant(roles=["admin"])
    b = await api.tenant(roles=["admin"])
    for t in (a, a, b):
        r = await api.client.post("/api/v1/vehicles", json=vehicle_body(), headers=t.headers())
        assert r.status_code == 201, r.text

    assert await _vehicle_tenants(app_engine, a) == {str(a.id)}
    assert await _vehicle_tenants(app_engine, b) == {str(b.id)}
    assert await _vehicle_tenants(app_engine, None) == set()
    async with app_engine.begin() as conn:
        await _scope(conn, a)
        count = (await conn.execute(text("SELECT count(*) FROM vehicles"))).scalar_one()
        assert count == 2
        # Every tenant-owned table, and the tenants table itself, is filtered the same way.
        for table in tenant_owned_tables():
            owners = (await conn.execute(text(f"SELECT DISTINCT tenant_id FROM {table}"))).all()  # noqa: S608
            assert {str(o[0]) for o in owners} <= {str(a.id)}, table
        tenants = (await conn.execute(text("SELECT id FROM tenants"))).all()
        assert [str(t[0]) for t in tenants] == [str(a.id)]
    # The setting is transaction-local: a pooled connection does not carry it over.
    async with app_engine.connect() as conn:
        async with conn.begin():
            await _scope(conn, a)
        rows = (await conn.execute(text("SELECT id FROM vehicles"))).all()
        assert rows == []


async def test_writes_into_another_tenant_are_refused(api: Api, app_engine: AsyncEngine) -> None:
    a = await api.tenant(roles=["admin"])
    b = await api.tenant(roles=["admin"])
    r = await api.client.post("/api/v1/vehicles", json=vehicle_body(), headers=b.headers())
    b_vehicle = r.json()["id"]
    r = await api.client.post("/api/v1/vehicles", json=vehicle_body(), headers=a.headers())
    assert r.status_code == 201
    async with app_engine.begin() as conn:
        await _scope(conn, a)
        changed = await conn.execute(
            text("UPDATE vehicles SET notes = 'x' WHERE id = :id"), {"id": b_vehicle}
        )
        assert changed.rowcount == 0  # invisible, so untouched
        deleted = await conn.execute(text("DELETE FROM vehicles WHERE id = :id"), {"id": b_vehicle})
        assert deleted.rowcount == 0
    move = "UPDATE vehicles SET tenant_id = :b WHERE tenant_id = :a"
    with pytest.raises(DBAPIError, match="row-level security"):
        await _execute(app_engine, a, move, a=str(a.id), b=str(b.id))
    forge = (
        "INSERT INTO audit_events (id, tenant_id, occurred_at, action, entity_type, changes) "
        "VALUES (gen_random_uuid(), :b, now(), 'forged', 'x', '{}')"
    )
    with pytest.raises(DBAPIError, match="row-level security"):
        await _execute(app_engine, a, forge, b=str(b.id))
    r = await api.client.get(f"/api/v1/vehicles/{b_vehicle}", headers=b.headers())
    assert r.status_code == 200
    assert r.json()["notes"] == ""


async def test_every_tenant_table_forces_row_level_security(
    api: Api, app_engine: AsyncEngine
) -> None:
    tables = tenant_owned_tables()
    assert {"vehicles", "drivers", "assignments", "devices", "users", "audit_events"} <= set(tables)
    async with app_engine.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT relname, relrowsecurity, relforcerowsecurity FROM pg_class "
                    "WHERE relkind IN ('r', 'p') AND relnamespace = 'public'::regnamespace"
                )
            )
        ).all()
        policies = (
            await conn.execute(text("SELECT tablename FROM pg_policies WHERE schemaname='public'"))
        ).all()
        role = (
            await conn.execute(
                text("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user")
            )
        ).one()
    flags = {r.relname: (r.relrowsecurity, r.relforcerowsecurity) for r in rows}
    for table in [*tables, "tenants"]:
        assert flags.get(table) == (True, True), (table, flags.get(table))
    assert {p[0] for p in policies} >= {*tables, "tenants"}
    assert tuple(role) == (False, False), "the application role must not bypass RLS"


async def test_app_role_cannot_rewrite_the_audit_log(api: Api, app_engine: AsyncEngine) -> None:
    a = await api.tenant(roles=["admin"])  # creating the user wrote audit events
    statements = [
        "UPDATE audit_events SET action = 'rewritten'",
        "DELETE FROM audit_events",
        "TRUNCATE audit_events",
    ]
    for statement in statements:
        with pytest.raises(DBAPIError, match="permission denied"):
            await _execute(app_engine, a, statement)
    async with app_engine.begin() as conn:
        await _scope(conn, a)
        count = (
            await conn.execute(text("SELECT count(*) FROM audit_events WHERE action = 'create'"))
        ).scalar_one()
    assert count >= 1
    # Nor can it change the schema or the migration history.
    for statement in (
        "UPDATE alembic_version SET version_num = 'x'",
        "ALTER TABLE vehicles DISABLE ROW LEVEL SECURITY",
        "DROP POLICY tenant_isolation ON vehicles",
    ):
        with pytest.raises(DBAPIError, match=r"permission denied|must be owner"):
            await _execute(app_engine, None, statement)


async def test_rls_sees_the_same_tenant_as_the_service_filter(api: Api) -> None:
    """The setting row-level security reads is the session's tenant, the filter's source."""
    a = await api.tenant(roles=["admin"])
    async with api.db.session(a.actor()) as session:
        await session.execute(select(Vehicle.id).limit(1))  # begins the transaction
        setting = await session.scalar(text("SELECT current_setting('ctafleet.tenant_id')"))
    assert setting == str(a.id) == str(tenant_of(session))
