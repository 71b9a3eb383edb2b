"""The offline sweep: a device silent longer than its rules allow is reported device_offline
while it still is, once, and the point that ends the silence does not report it again."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from ctafleet.telematics import offline
from ctafleet.telematics.derive import Rules
from ctafleet.telematics.ingest.writer import WriteResult
from ctafleet.telematics.models import DeviceDeriveState, TelemetryEvent
from tests.kit.app import Api, Backend, TenantUsers, own_app
from tests.kit.factories import new_vehicle
from tests.telematics.ingest.kit import OSMAND, after_commit_spy, device, drain

pytestmark = pytest.mark.asyncio

OFFLINE_AFTER_S = Rules().offline_after_s


@pytest.fixture
def published(api: Api) -> Iterator[list[tuple[uuid.UUID, uuid.UUID, str]]]:
    """(tenant, device, event type) of what the after-commit stages (the live feed) get."""
    seen: list[tuple[uuid.UUID, uuid.UUID, str]] = []

    def capture(result: WriteResult) -> None:
        for device_id, events in result.events.items():
            tenant = result.contacts[device_id].tenant_id
            seen.extend((tenant, device_id, e.type) for e in events)

    with after_commit_spy(api, capture):
        yield seen


def mine(
    published: list[tuple[uuid.UUID, uuid.UUID, str]], device_id: uuid.UUID
) -> list[tuple[uuid.UUID, uuid.UUID, str]]:
    return [p for p in published if p[1] == device_id]


async def report(api: Api, d: dict[str, Any], *, fix: bool = True) -> None:
    """One OsmAnd message now: a fix, or a heartbeat (no coordinates, no time)."""
    params = {"id": d["unique_id"], "token": d["credential"]}
    if fix:
        params |= {"lat": "41.88", "lon": "-87.63", "timestamp": str(int(_now(api)))}
    r = await api.client.get(OSMAND, params=params)
    assert r.status_code == 200, r.text
    await drain(api)


def _now(api: Api) -> float:
    return api.clock.now().timestamp()


async def sweep(api: Api) -> WriteResult:
    result: WriteResult = await api.app.state.ctafleet.telemetry.worker.sweep()
    return result


async def events(api: Api, d: dict[str, Any]) -> list[TelemetryEvent]:
    async with api.db.system_session() as session:
        return list(
            await session.scalars(
                select(TelemetryEvent)
                .where(TelemetryEvent.device_id == uuid.UUID(d["id"]))
                .order_by(TelemetryEvent.time, TelemetryEvent.type)
            )
        )


async def test_a_silent_device_is_reported_offline_once_while_it_is_silent(
    api: Api, tenant: TenantUsers, published: list[tuple[uuid.UUID, uuid.UUID, str]]
) -> None:
    vehicle = await new_vehicle(api, tenant)
    d = await device(api, tenant, vehicle_id=vehicle["id"])
    await report(api, d)
    last_fix = api.clock.now()
    device_id = uuid.UUID(d["id"])

    api.clock.advance(OFFLINE_AFTER_S - 60)
    assert device_id not in (await sweep(api)).events  # not silent long enough
    api.clock.advance(61)
    swept = await sweep(api)
    assert [e.type for e in swept.events[device_id]] == ["device_offline"]
    assert swept.contacts[device_id].tenant_id == tenant.id
    assert swept.contacts[device_id].vehicle_id == uuid.UUID(vehicle["id"])
    (stored,) = await events(api, d)
    assert stored.type == "device_offline"
    assert stored.tenant_id == tenant.id
    assert stored.vehicle_id == uuid.UUID(vehicle["id"])
    assert stored.time == last_fix + timedelta(seconds=OFFLINE_AFTER_S)
    assert stored.limit == OFFLINE_AFTER_S
    assert (stored.lat, stored.lon) == (41.88, -87.63)  # where it was last seen
    # Other tests' devices on this shared app are swept too: only this one's are looked at.
    assert mine(published, device_id) == [(tenant.id, device_id, "device_offline")]

    # Later sweeps leave it alone: one event, one notification.
    api.clock.advance(3600)
    assert device_id not in (await sweep(api)).events
    assert len(await events(api, d)) == 1
    assert mine(published, device_id) == [(tenant.id, device_id, "device_offline")]

    # The point that ends the silence derives device_offline again (same key: not stored or
    # passed on twice) and device_online.
    await report(api, d)
    assert [e.type for e in await events(api, d)] == ["device_offline", "device_online"]
    assert mine(published, device_id) == [
        (tenant.id, device_id, "device_offline"),
        (tenant.id, device_id, "device_online"),
    ]
    async with api.db.system_session() as session:
        state = await session.get(DeviceDeriveState, device_id)
        assert state is not None
        assert state.offline_at is None  # the next silence counts again

    # And the next silence is reported in its turn.
    api.clock.advance(OFFLINE_AFTER_S + 1)
    assert [e.type for e in (await sweep(api)).events[device_id]] == ["device_offline"]
    assert [e.type for e in await events(api, d)] == [
        "device_offline",
        "device_online",
        "device_offline",
    ]


async def test_heartbeats_keep_a_device_online_without_a_fix(api: Api, tenant: TenantUsers) -> None:
    d = await device(api, tenant)
    device_id = uuid.UUID(d["id"])
    await report(api, d)
    api.clock.advance(OFFLINE_AFTER_S - 100)
    await report(api, d, fix=False)  # parked: the tracker only says it is alive
    api.clock.advance(200)  # the fix is older than the limit, the contact is not
    assert device_id not in (await sweep(api)).events
    assert await events(api, d) == []
    api.clock.advance(OFFLINE_AFTER_S)  # now the contact is too
    assert [e.type for e in (await sweep(api)).events[device_id]] == ["device_offline"]


async def test_a_device_that_never_sent_a_point_is_not_swept(api: Api, tenant: TenantUsers) -> None:
    d = await device(api, tenant)
    await report(api, d, fix=False)  # contact, but nothing derived from it yet
    api.clock.advance(OFFLINE_AFTER_S * 2)
    assert uuid.UUID(d["id"]) not in (await sweep(api)).events


async def test_a_tenant_that_allows_less_silence_hears_of_it_sooner(
    api: Api, tenant: TenantUsers
) -> None:
    quick = await api.tenant(roles=["admin"])
    r = await api.client.patch(
        "/api/v1/telemetry/policy",
        json={"rules": {"offline_after_s": 300}},
        headers=quick.headers(),
    )
    assert r.status_code == 200, r.text
    mine_, other = await device(api, quick), await device(api, tenant)
    await report(api, mine_)
    await report(api, other)
    api.clock.advance(301)
    swept = (await sweep(api)).events
    assert [e.type for e in swept[uuid.UUID(mine_["id"])]] == ["device_offline"]
    assert swept[uuid.UUID(mine_["id"])][0].limit == 300
    assert uuid.UUID(other["id"]) not in swept  # the default 15 minutes


async def test_devices_a_tenant_allows_to_stay_silent_never_hold_up_the_others(
    api: Api, tenant: TenantUsers
) -> None:
    """Each sweep reports at most `limit` devices, the longest silences first, among those
    due: a tenant's devices still within its week of allowed silence are not in the way."""
    lenient = await api.tenant(roles=["admin"])
    r = await api.client.patch(
        "/api/v1/telemetry/policy",
        json={"rules": {"offline_after_s": 7 * 86400}},
        headers=lenient.headers(),
    )
    assert r.status_code == 200, r.text
    parked = [await device(api, lenient) for _ in range(3)]
    strict = await device(api, tenant)
    for d in parked:
        await report(api, d)
    api.clock.advance(86400)  # a day later the strict tenant's device goes quiet
    await report(api, strict)
    api.clock.advance(OFFLINE_AFTER_S + 1)
    worker = api.app.state.ctafleet.telemetry.worker
    for _ in range(1000):  # other tests' silent devices may come first: one per sweep
        async with api.db.system_session() as session, session.begin():
            swept = await offline.sweep(
                session, now=api.clock.now(), rules_for=worker.offline_sweep.rules_for, limit=1
            )
        assert not {uuid.UUID(d["id"]) for d in parked} & set(swept.events)
        if uuid.UUID(strict["id"]) in swept.events:
            break
    else:
        pytest.fail("the strict tenant's device was never reported")


async def test_the_worker_sweeps_on_its_own_every_offline_sweep_s(
    backend: Backend, tmp_path: Path
) -> None:
    """The setting's schedule (the shared test app turns it off): a sweep with the first
    batch loop, none again until offline_sweep_s has passed."""
    async with own_app(backend, tmp_path, telemetry={"offline_sweep_s": 1.0}) as own:
        t = await own.tenant(roles=["admin"])
        d = await device(own, t)
        await report(own, d)
        own.clock.advance(OFFLINE_AFTER_S + 1)
        worker = own.app.state.ctafleet.telemetry.worker
        sweeps: list[WriteResult] = []
        original = worker.sweep

        async def counted() -> WriteResult:
            sweeps.append(await original())
            return sweeps[-1]

        worker.sweep = counted
        worker.block_s = 0  # an empty queue answers at once
        worker._swept_at = float("-inf")  # as a worker that just started
        await worker.run_once()
        await worker.run_once()
        assert len(sweeps) == 1
        assert [e.type for e in sweeps[0].events[uuid.UUID(d["id"])]] == ["device_offline"]
        await asyncio.sleep(1.05)
        await worker.run_once()
        assert len(sweeps) == 2
