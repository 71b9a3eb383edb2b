"""One source of the tenant: the session's. Row-level security and the service layer's filter
read it from the same place, so they cannot disagree; a service handed an actor of another
tenant, or a row of another tenant, is refused."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ctafleet.db.engine import Database
from ctafleet.db.scope import TenancyMismatch, tenant_of
from ctafleet.fleet.vehicles import service as vehicles
from ctafleet.fleet.vehicles.models import Vehicle
from ctafleet.fleet.vehicles.schemas import VehicleCreate
from ctafleet.kernel.context import Actor
from tests.kit.app import Api, TenantUsers
from tests.kit.factories import new_vehicle, vehicle_body


async def _fleet(api: Api) -> tuple[TenantUsers, TenantUsers, set[str], set[str]]:
    a = await api.tenant(roles=["admin"])
    b = await api.tenant(roles=["admin"])
    ids_a = {(await new_vehicle(api, a))["id"] for _ in range(2)}
    ids_b = {(await new_vehicle(api, b))["id"]}
    return a, b, ids_a, ids_b


async def _ids(session: AsyncSession) -> set[str]:
    return {str(i) for i in (await session.scalars(select(Vehicle.id))).all()}


async def test_an_unfiltered_query_sees_only_the_sessions_tenant(api: Api) -> None:
    a, b, ids_a, ids_b = await _fleet(api)
    for tenant, expected in ((a, ids_a), (b, ids_b), (a, ids_a)):
        # The same statement objects each time: the tenant is a bound value of the filter, not
        # part of a cached compiled statement that one tenant could hand to the next.
        async with api.db.session(tenant.actor()) as session:
            assert tenant_of(session) == tenant.id
            assert await _ids(session) == expected
            count = await session.scalar(select(func.count()).select_from(Vehicle))
            assert count == len(expected)
            # An object of another tenant is not found by primary key either.
            other = next(iter(ids_b if tenant is a else ids_a))
            assert await session.get(Vehicle, uuid.UUID(other)) is None


async def test_the_filter_holds_without_row_level_security(api: Api, tmp_path: object) -> None:
    """On PostgreSQL the table owner bypasses row-level security: what still hides the other
    tenant there is the service layer's filter alone (on SQLite it is the only wall)."""
    a, _b, ids_a, _ids_b = await _fleet(api)
    db = Database(api.backend.admin_url)
    try:
        async with db.session(a.actor()) as session:
            assert await _ids(session) == ids_a
        async with db.system_session() as session:
            assert ids_a < await _ids(session)  # the system scope sees every tenant
    finally:
        await db.dispose()


async def test_bulk_updates_touch_only_the_sessions_tenant(api: Api) -> None:
    a, b, _ids_a, ids_b = await _fleet(api)
    async with api.db.session(a.actor()) as session:
        result = await session.execute(
            update(Vehicle).values(notes="bulk").execution_options(synchronize_session=False)
        )
        assert result.rowcount == 2  # type: ignore[attr-defined]
        await session.commit()
    r = await api.client.get(f"/api/v1/vehicles/{next(iter(ids_b))}", headers=b.headers())
    assert r.json()["notes"] == ""


async def test_a_service_refuses_an_actor_of_another_tenant(api: Api) -> None:
    a, b, ids_a, _ids_b = await _fleet(api)
    async with api.db.session(a.actor()) as session:
        with pytest.raises(TenancyMismatch):
            await vehicles.create_vehicle(
                session=session, actor=b.actor(), data=VehicleCreate(**vehicle_body())
            )
        with pytest.raises(TenancyMismatch):
            await vehicles.get_vehicle(
                session=session, actor=b.actor(), vehicle_id=uuid.UUID(next(iter(ids_a)))
            )
    # Nothing was written for either tenant.
    async with api.db.session(b.actor()) as session:
        assert len(await _ids(session)) == 1


async def test_a_row_of_another_tenant_is_refused_and_a_new_row_is_stamped(api: Api) -> None:
    a, b, _ids_a, _ids_b = await _fleet(api)
    async with api.db.session(a.actor()) as session:
        session.add(Vehicle(tenant_id=b.id, **VehicleCreate(**vehicle_body()).model_dump()))
        with pytest.raises(TenancyMismatch):
            await session.flush()
        await session.rollback()
        stamped = Vehicle(**VehicleCreate(**vehicle_body()).model_dump())
        session.add(stamped)
        await session.commit()
        assert stamped.tenant_id == a.id
    async with api.db.session(b.actor()) as session:
        assert len(await _ids(session)) == 1


async def test_a_session_of_no_tenant_cannot_read_tenant_rows(api: Api) -> None:
    await _fleet(api)
    async with AsyncSession(api.db.engine) as session:
        with pytest.raises(TenancyMismatch):
            await session.execute(select(Vehicle.id))


def test_a_system_actor_belongs_to_its_tenant() -> None:
    tenant = uuid.uuid4()
    actor = Actor.system(tenant)
    assert actor.tenant_id == tenant
    assert actor.is_system
    assert not Actor(tenant_id=tenant, user_id=uuid.uuid4(), role="admin").is_system
