"""The live feed over a real WebSocket (uvicorn on a loopback port, the `websockets` client):
a committed position reaches its tenant's clients and nobody else's, filters, refusals with
their close codes, a slow client dropped without holding up the rest, and fan-out across two
API processes through the real Redis."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
import uvicorn
import websockets
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from ctafleet.observability.metrics import REGISTRY
from ctafleet.telematics.derive.events import Event
from ctafleet.telematics.ingest.writer import Contact, WriteResult
from ctafleet.telematics.live import SLOW, TYPES, LiveClient, LiveHub, LivePublisher
from ctafleet.telematics.points import Point
from ctafleet.telematics.schemas import LastPositionRead
from tests.kit.app import PASSWORD, Api, Backend, TenantUsers, make_tenant, own_app
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


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(f"ctafleet_{name}", labels) or 0.0


async def test_the_hub_drops_a_full_client_without_waiting() -> None:
    """At the hub: a client whose sender never runs fills its queue and is dropped (1013),
    without the publisher ever waiting, while a client that keeps up gets everything."""
    hub = LiveHub(redis=None, prefix="t", queue_size=8)
    tenant = uuid.uuid4()
    slow = LiveClient(tenant_id=tenant, vehicle_ids=None, types=TYPES, queue_size=8)
    fast = LiveClient(tenant_id=tenant, vehicle_ids=None, types=TYPES, queue_size=8)
    await hub.attach(slow)
    await hub.attach(fast)
    dropped = sample("live_dropped_total", reason="slow_client")
    got = 0
    for n in range(100):
        message = {"type": "position", "vehicle_id": None, "n": n}
        await asyncio.wait_for(hub.publish({tenant: [message]}), 0.1)  # never waits
        batch = fast.queue.get_nowait()
        got += batch is not None and json.loads(batch[0])["n"] == n
    assert got == 100
    assert slow.close_code == SLOW
    assert slow.queue.get_nowait() is None  # what it had is discarded: the sender closes
    assert sample("live_dropped_total", reason="slow_client") == dropped + 1
    hub.detach(slow)
    hub.detach(fast)
    assert hub.clients == 0


async def stalled_client(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A WebSocket client that shakes hands and then reads nothing: a tiny receive buffer, and
    a stream that stops reading from the socket after 2 KiB."""
    parsed = urlsplit(url)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (parsed.hostname, parsed.port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=1024)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET {parsed.path}?{parsed.query} HTTP/1.1\r\nHost: {parsed.netloc}\r\n"
        f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 101"), head
    return reader, writer


async def close_code_of(reader: asyncio.StreamReader, within: float = 10) -> int:
    """Reads the server's frames (unmasked) up to its close frame: the close code."""

    async def read() -> int:
        while True:
            b0, b1 = await reader.readexactly(2)
            length = b1 & 0x7F
            if length == 126:
                length = int.from_bytes(await reader.readexactly(2), "big")
            elif length == 127:
                length = int.from_bytes(await reader.readexactly(8), "big")
            payload = await reader.readexactly(length)
            if b0 & 0x0F == 0x8:
                return int.from_bytes(payload[:2], "big")

    return await asyncio.wait_for(read(), within)


async def test_a_client_that_stops_reading_is_dropped_and_holds_up_nothing(
    backend: Backend, tmp_path: Path
) -> None:
    """A real client that stops reading: once the socket's buffers are full its queue of two
    batches fills, it is dropped with 1013, while a client that reads keeps receiving and the
    worker commits and publishes as before."""
    async with own_app(backend, tmp_path, telemetry={"live_client_queue": 2}) as own:
        t = await make_tenant(own, roles=["admin", "viewer"])
        d = await device(own, t)
        hub = own.app.state.ctafleet.telemetry.live
        pad = "x" * 4000
        dropped = sample("live_dropped_total", reason="slow_client")
        clients = sample("websocket_clients")
        async with served(own) as url:
            reader, writer = await stalled_client(f"{url}?token={t.tokens['viewer']}")
            async with websockets.connect(f"{url}?token={t.tokens['viewer']}") as fast:
                await next_message(fast, "ready")
                assert sample("websocket_clients") == clients + 2
                # Paced by the client that reads: it never falls behind, the other one does.
                for n in range(5000):
                    message = {"type": "position", "vehicle_id": None, "n": n, "pad": pad}
                    await asyncio.wait_for(hub.publish({t.id: [message]}), 0.1)
                    assert (await next_message(fast))["n"] == n
                    if sample("live_dropped_total", reason="slow_client") > dropped:
                        break
                else:
                    raise AssertionError("the stalled client was never dropped")
                assert hub.clients == 1
                assert sample("websocket_clients") == clients + 1
                await send_fix(own, d, 41.911)
                assert await asyncio.wait_for(drain(own), 10) == 1
                got = await next_message(fast)
                assert got["device_id"] == d["id"]
                # Reading again, the dropped client finds the close after what was sent.
                assert await close_code_of(reader) == SLOW
                writer.close()
        assert sample("websocket_clients") == clients


async def test_the_department_filter(api: Api, tenant: TenantUsers) -> None:
    dept = f"Streets {uuid.uuid4().hex[:6]}"
    streets = await device(
        api, tenant, vehicle_id=(await new_vehicle(api, tenant, department=dept))["id"]
    )
    parks = await device(
        api, tenant, vehicle_id=(await new_vehicle(api, tenant, department="Parks"))["id"]
    )
    async with (
        served(api) as url,
        websockets.connect(f"{url}?token={tenant.tokens['viewer']}&department={quote(dept)}") as ws,
    ):
        assert (await next_message(ws, "ready"))["vehicle_ids"] == [streets["vehicle_id"]]
        await send_fix(api, parks, 41.912)
        await send_fix(api, streets, 41.913)
        await drain(api)
        assert (await next_message(ws))["vehicle_id"] == streets["vehicle_id"]
        await nothing_more(ws)


async def test_the_token_as_a_subprotocol(api: Api, tenant: TenantUsers) -> None:
    d = await device(api, tenant)
    token = tenant.tokens["viewer"]
    async with (
        served(api) as url,
        websockets.connect(url, subprotocols=[Subprotocol("bearer"), Subprotocol(token)]) as ws,
    ):
        assert ws.subprotocol == "bearer"
        await next_message(ws, "ready")
        await send_fix(api, d, 41.914)
        await drain(api)
        assert (await next_message(ws))["device_id"] == d["id"]


async def test_types_limit_what_is_sent(api: Api, tenant: TenantUsers) -> None:
    d = await device(api, tenant)
    async with (
        served(api) as url,
        websockets.connect(f"{url}?token={tenant.tokens['viewer']}&types=events") as ws,
    ):
        assert (await next_message(ws, "ready"))["types"] == ["events"]
        await send_fix(api, d, 41.915)
        await drain(api)
        await nothing_more(ws)


async def test_an_ended_session_closes_the_feed_and_a_renewed_token_keeps_it(
    backend: Backend, tmp_path: Path
) -> None:
    async with own_app(backend, tmp_path, telemetry={"live_recheck_s": 0.2}) as own:
        t = await make_tenant(own, roles=["viewer"])
        first = t.tokens["viewer"]
        r = await own.client.post(
            "/api/v1/auth/login", json={"email": t.users["viewer"].email, "password": PASSWORD}
        )
        renewed = r.json()["access_token"]
        async with served(own) as url, websockets.connect(f"{url}?token={first}") as ws:
            await next_message(ws, "ready")
            await ws.send(json.dumps({"type": "auth", "token": renewed}))
            await asyncio.sleep(0.05)
            r = await own.client.post(
                "/api/v1/auth/logout", headers={"Authorization": f"Bearer {first}"}
            )
            assert r.status_code == 204
            await nothing_more(ws, within=0.8)  # checked again with the renewed token: open
            r = await own.client.post(
                "/api/v1/auth/logout", headers={"Authorization": f"Bearer {renewed}"}
            )
            assert r.status_code == 204
            with pytest.raises(ConnectionClosed) as closed:
                await nothing_more(ws, within=3)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 4401


async def test_shutdown_closes_every_client(backend: Backend, tmp_path: Path) -> None:
    """The app's shutdown tells clients the server is going away (1001); uvicorn, stopping,
    closes the connections itself first (1012). Either way the gauge comes back down."""
    clients = sample("websocket_clients")
    async with own_app(backend, tmp_path) as own:
        t = await make_tenant(own, roles=["viewer"])
        token = t.tokens["viewer"]
        async with served(own) as url:
            a = await websockets.connect(f"{url}?token={token}")
            b = await websockets.connect(f"{url}?token={token}")
            for ws in (a, b):
                await next_message(ws, "ready")
            assert sample("websocket_clients") == clients + 2
            await own.app.state.ctafleet.telemetry.live.close()
            for ws in (a, b):
                with pytest.raises(ConnectionClosed) as closed:
                    await next_message(ws)
                assert closed.value.rcvd is not None
                assert closed.value.rcvd.code == 1001
            assert sample("websocket_clients") == clients
    async with own_app(backend, tmp_path) as own:
        t = await make_tenant(own, roles=["viewer"])
        async with served(own) as url:
            c = await websockets.connect(f"{url}?token={t.tokens['viewer']}")
            await next_message(c, "ready")
        with pytest.raises(ConnectionClosed) as closed:
            await next_message(c)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1012
        for _ in range(50):
            if sample("websocket_clients") == clients:
                break
            await asyncio.sleep(0.02)
        assert sample("websocket_clients") == clients


async def test_the_token_in_the_url_never_reaches_the_log(backend: Backend, tmp_path: Path) -> None:
    lines = io.StringIO()
    async with own_app(backend, tmp_path, observability={"log_level": "INFO"}) as own:
        root = logging.getLogger()
        handler = logging.StreamHandler(lines)
        handler.setFormatter(root.handlers[0].formatter)
        root.addHandler(handler)
        try:
            t = await make_tenant(own, roles=["viewer"])
            async with (
                served(own) as url,
                websockets.connect(f"{url}?token={t.tokens['viewer']}") as ws,
            ):
                await next_message(ws, "ready")
        finally:
            root.removeHandler(handler)
    text = lines.getvalue()
    assert "/api/v1/live" in text  # uvicorn logged the connection, path and query
    assert t.tokens["viewer"] not in text
    assert t.tokens["viewer"][-20:] not in text


def a_batch(
    tenant_id: uuid.UUID, device_id: uuid.UUID, vehicle_id: uuid.UUID | None
) -> WriteResult:
    when = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    result = WriteResult()
    result.contacts[device_id] = Contact(tenant_id, vehicle_id, when + timedelta(seconds=5))
    result.new_points[device_id] = [
        Point(device_uid="dev-1", fix_time=when - timedelta(seconds=10), lat=41.0, lon=-87.0),
        Point(device_uid="dev-1", fix_time=when, lat=41.5, lon=-87.5, speed_mps=12.0),
        Point(
            device_uid="dev-1", fix_time=when + timedelta(seconds=1), lat=0.0, lon=0.0, valid=False
        ),
    ]
    result.events[device_id] = [
        Event(
            device_uid="dev-1",
            type="overspeed",
            time=when,
            lat=41.5,
            lon=-87.5,
            key="k1",
            value=30.0,
            limit=25.0,
        )
    ]
    return result


async def test_a_batch_becomes_a_position_per_device_and_its_events() -> None:
    tenant, device_id, vehicle = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    messages = LivePublisher.messages(a_batch(tenant, device_id, vehicle))
    assert list(messages) == [tenant]
    position, event = messages[tenant]
    # The fields of LastPositionRead (the REST snapshot), of the newest valid fix.
    assert set(position) == set(LastPositionRead.model_fields) | {"type"}
    assert position["type"] == "position"
    assert position["fix_time"] == "2026-05-01T12:00:00Z"
    assert position["last_message_at"] == "2026-05-01T12:00:05Z"
    assert (position["lat"], position["speed_mps"]) == (41.5, 12.0)
    assert position["vehicle_id"] == str(vehicle)
    assert event == {
        "type": "event",
        "device_id": str(device_id),
        "vehicle_id": str(vehicle),
        "event": a_batch(tenant, device_id, vehicle).events[device_id][0].as_dict(),
    }


async def test_a_failing_redis_is_counted_and_never_holds_up_the_worker() -> None:
    import redis.asyncio as aioredis

    dead = aioredis.from_url(f"redis://127.0.0.1:{free_port()}", socket_connect_timeout=0.5)
    publisher = LivePublisher(LiveHub(redis=dead, prefix="t"), timeout_s=0.3)
    failed = sample("live_dropped_total", reason="publish_failed")
    try:
        batch = a_batch(uuid.uuid4(), uuid.uuid4(), None)
        await asyncio.wait_for(publisher(batch), 0.05)  # hands over, returns at once
        await asyncio.wait_for(publisher.flushed(), 5)
    finally:
        await dead.aclose()
    assert sample("live_dropped_total", reason="publish_failed") == failed + 1


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
