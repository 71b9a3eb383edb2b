"""The live feed over a real WebSocket (uvicorn on a loopback port, the `websockets` client):
a committed position reaches its tenant's clients and nobody else's, filters, refusals with
their close codes, a slow client dropped without holding up the rest, and fan-out across two
API processes through the real Redis."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
import websockets
from websockets.exceptions import ConnectionClosed

from ctafleet.telematics.live import SLOW, TYPES, LiveClient, LiveHub
from tests.kit.app import Api, Backend, TenantUsers, make_tenant, own_app
from tests.kit.factories import new_vehicle
from tests.kit.net import free_port
from tests.telematics.ingest.kit import OSMAND, device, drain

pytestmark = pytest.mark.asyncio


@contextlib.asynccontextmanager
async def served(api: Api) -> AsyncIterator[str]:
    """The test's app on a loopback port, in the test's own event loop (its database engine
    lives there); the app's lifespan stays the test's."""
    port = free_port()
    config = uvicorn.Config(api.app, host="127.0.0.1", port=port, lifespan="off", log_config=None)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "the server did not start"
        await asyncio.sleep(0.02)
    try:
        yield f"ws://127.0.0.1:{port}/api/v1/live"
    finally:
        server.should_exit = True
        await task


async def next_message(ws: Any, kind: str = "position", within: float = 5) -> dict[str, Any]:
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), within))
        if message["type"] == kind:
            return message  # type: ignore[no-any-return]


async def nothing_more(ws: Any, within: float = 0.5) -> None:
    with contextlib.suppress(TimeoutError):
        while True:
            message = json.loads(await asyncio.wait_for(ws.recv(), within))
            assert message["type"] in ("ping",), message


async def send_fix(api: Api, d: dict[str, Any], lat: float = 41.9) -> None:
    params = {"id": d["unique_id"], "token": d["credential"], "lat": str(lat), "lon": "-87.6"}
    params["timestamp"] = str(int(api.clock.now().timestamp()) - 60 + int(lat * 1000) % 50)
    r = await api.client.get(OSMAND, params=params)
    assert r.status_code == 200, r.text


async def test_a_committed_position_reaches_its_tenant_only(api: Api, tenant: TenantUsers) -> None:
    other = await api.tenant(roles=["admin", "viewer"])
    mine = await device(api, tenant, vehicle_id=(await new_vehicle(api, tenant))["id"])
    theirs = await device(api, other)
    async with (
        served(api) as url,
        websockets.connect(f"{url}?token={tenant.tokens['viewer']}") as ws,
        websockets.connect(f"{url}?token={other.tokens['viewer']}") as spy,
    ):
        ready = await next_message(ws, "ready")
        assert ready == {"type": "ready", "vehicle_ids": None, "types": ["events", "positions"]}
        await next_message(spy, "ready")
        await send_fix(api, mine, 41.901)
        await drain(api)
        got = await next_message(ws)
        assert got["device_id"] == mine["id"]
        assert got["vehicle_id"] == mine["vehicle_id"]
        assert got["lat"] == pytest.approx(41.901)
        # The other tenant's client sees only its own device's point, never the first.
        await send_fix(api, theirs, 41.902)
        await drain(api)
        seen = await next_message(spy)
        assert seen["device_id"] == theirs["id"]
        await nothing_more(spy)


async def test_the_vehicle_filter(api: Api, tenant: TenantUsers) -> None:
    a = await device(api, tenant, vehicle_id=(await new_vehicle(api, tenant))["id"])
    b = await device(api, tenant, vehicle_id=(await new_vehicle(api, tenant))["id"])
    async with (
        served(api) as url,
        websockets.connect(
            f"{url}?token={tenant.tokens['viewer']}&vehicle_id={b['vehicle_id']}"
        ) as ws,
    ):
        assert (await next_message(ws, "ready"))["vehicle_ids"] == [b["vehicle_id"]]
        await send_fix(api, a, 41.903)
        await send_fix(api, b, 41.904)
        await drain(api)
        got = await next_message(ws)
        assert got["vehicle_id"] == b["vehicle_id"]
        await nothing_more(ws)


async def test_a_vehicle_of_another_tenant_matches_nothing(api: Api, tenant: TenantUsers) -> None:
    other = await api.tenant(roles=["admin"])
    theirs = await device(api, other, vehicle_id=(await new_vehicle(api, other))["id"])
    async with (
        served(api) as url,
        websockets.connect(
            f"{url}?token={tenant.tokens['viewer']}&vehicle_id={theirs['vehicle_id']}"
        ) as ws,
    ):
        assert (await next_message(ws, "ready"))["vehicle_ids"] == []
        await send_fix(api, theirs, 41.905)
        await drain(api)
        await nothing_more(ws)


async def test_the_token_may_come_as_the_first_message(api: Api, tenant: TenantUsers) -> None:
    d = await device(api, tenant)
    async with served(api) as url, websockets.connect(url) as ws:
        await ws.send(json.dumps({"type": "auth", "token": tenant.tokens["viewer"]}))
        await next_message(ws, "ready")
        await send_fix(api, d, 41.906)
        await drain(api)
        assert (await next_message(ws))["device_id"] == d["id"]


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("", 4401),
        ("?token=not-a-token", 4401),
        ("?token={viewer}&vehicle_id=nope", 4400),
        ("?token={viewer}&types=gossip", 4400),
    ],
)
async def test_refusals_close_with_their_code(
    api: Api, tenant: TenantUsers, query: str, code: int
) -> None:
    async with served(api) as url, websockets.connect(url + query.format(**tenant.tokens)) as ws:
        if not query:
            await ws.send(json.dumps({"type": "hello"}))
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == code


async def test_a_role_without_telemetry_read_is_refused(api: Api) -> None:
    t = await make_tenant(api, roles=["driver"])
    async with served(api) as url, websockets.connect(f"{url}?token={t.tokens['driver']}") as ws:
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4403


async def test_a_slow_client_is_dropped_and_the_others_keep_receiving() -> None:
    """At the hub: a client that reads nothing fills its queue and is dropped (1013), without
    the publisher ever waiting, while a client that reads gets everything."""
    hub = LiveHub(redis=None, prefix="t", queue_size=8)
    tenant = uuid.uuid4()
    slow = LiveClient(tenant_id=tenant, vehicle_ids=None, types=TYPES, queue_size=8)
    fast = LiveClient(tenant_id=tenant, vehicle_ids=None, types=TYPES, queue_size=8)
    await hub.attach(slow)
    await hub.attach(fast)
    got = 0
    for n in range(100):
        message = {"type": "position", "vehicle_id": None, "n": n}
        await asyncio.wait_for(hub.publish(tenant, [message]), 0.1)  # never waits
        got += fast.queue.get_nowait() is not None
    assert got == 100
    assert slow.close_code == SLOW
    assert slow.queue.get_nowait() is None  # what it had is discarded: the sender closes
    hub.detach(slow)
    hub.detach(fast)


async def test_two_api_processes_fan_out_through_redis(
    backend: Backend, tmp_path: Path, redis_url: str, queue_prefix: str
) -> None:
    from ctafleet.telematics.ingest import process

    settings: dict[str, Any] = {
        "redis": {"url": redis_url},
        "telemetry": {"queue_prefix": queue_prefix},
    }
    async with own_app(backend, tmp_path / "a", **settings) as one:
        t = await make_tenant(one, roles=["admin", "viewer"])
        d = await device(one, t)
        redis = one.app.state.ctafleet.redis
        worker = process.build(one.settings, redis=redis, db=one.db, clock=one.clock, name="w")
        async with (
            own_app(backend, tmp_path / "b", settings=one.settings) as two,
            served(one) as url_one,
            served(two) as url_two,
            websockets.connect(f"{url_one}?token={t.tokens['viewer']}") as a,
            websockets.connect(f"{url_two}?token={t.tokens['viewer']}") as b,
        ):
            await next_message(a, "ready")
            await next_message(b, "ready")
            await send_fix(one, d, 41.907)
            await worker.leases.tick()
            for _ in range(100):  # the point is queued: the worker reads it at once
                if (await worker.run_once()).entries:
                    break
            for ws in (a, b):
                assert (await next_message(ws))["device_id"] == d["id"]
        await worker.leases.release_all()
