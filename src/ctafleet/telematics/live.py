"""The live feed: positions and derived events of the caller's tenant, pushed over a WebSocket.

    GET /api/v1/live?token=<access token>[&vehicle_id=<id>...][&department=<name>]
                    [&types=positions,events]

The access token comes as the `token` parameter or, when absent, as the first message
`{"type": "auth", "token": "..."}` within 5 seconds (browsers cannot set headers on a
WebSocket; a query string may end up in proxy logs). The caller needs `telemetry:read`.

Messages, JSON, one per frame:

    {"type": "ready", "vehicle_ids": [...] | null, "types": ["positions", "events"]}
    {"type": "position", "device_id", "vehicle_id", "fix_time", "lat", "lon", "speed_mps",
     "course_deg", "altitude_m", "accuracy_m", "battery_pct", "ignition"}
    {"type": "event", "device_id", "vehicle_id", "event": {key, type, time, lat, lon, value,
     duration_s, limit, geofence_id, device_uid}}
    {"type": "ping"}                       every telemetry.live_ping_s

Close codes: 4400 bad filter, 4401 no valid token, 4403 no permission, 1013 the client read
too slowly (its queue of telemetry.live_client_queue messages filled: it is dropped so nothing
else waits for it), 1011 the feed is unavailable (Redis unreachable), 1001 the server is
shutting down.

Delivery is best effort and at most once: a position is published when its batch commits,
and a client that reconnects reads the present from GET /api/v1/telemetry/snapshot. With Redis
the worker publishes per tenant (channel `<queue prefix>:live:<tenant id>`) and every API
process fans out to its own clients; without Redis the in-process worker hands messages to the
hub directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import orjson
import structlog
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from ctafleet.observability.metrics import WEBSOCKET_CLIENTS
from ctafleet.telematics.derive.events import iso_utc
from ctafleet.telematics.ingest.writer import WriteResult
from ctafleet.telematics.points import Point

log = structlog.get_logger("ctafleet.live")

TYPES = frozenset({"positions", "events"})
SLOW = 1013  # "try again later": the client fell behind
GOING_AWAY = 1001


class LiveClient:
    """One connected WebSocket: its tenant, its filters and a bounded queue of messages."""

    def __init__(
        self,
        *,
        tenant_id: uuid.UUID,
        vehicle_ids: frozenset[uuid.UUID] | None,
        types: frozenset[str],
        queue_size: int,
    ) -> None:
        self.tenant_id = tenant_id
        self.vehicle_ids = vehicle_ids
        self.types = types
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue(queue_size)
        self.close_code: int | None = None  # set when the server ends the connection

    def offer(self, messages: Iterable[dict[str, Any]]) -> None:
        for message in messages:
            kind = "positions" if message["type"] == "position" else "events"
            if kind not in self.types:
                continue
            if self.vehicle_ids is not None and _uuid(message["vehicle_id"]) not in (
                self.vehicle_ids
            ):
                continue
            try:
                self.queue.put_nowait(orjson.dumps(message))
            except asyncio.QueueFull:
                self.drop(SLOW)
                return

    def drop(self, code: int) -> None:
        """End the connection: what is queued is discarded, the sender wakes and closes."""
        if self.close_code is None:
            self.close_code = code
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(None)


def _uuid(value: Any) -> uuid.UUID | None:
    return uuid.UUID(value) if isinstance(value, str) else value


class LiveHub:
    """This process's live clients, and the Redis subscription that feeds them."""

    def __init__(self, *, redis: Any, prefix: str, queue_size: int = 256) -> None:
        self.redis = redis
        self.prefix = prefix
        self.queue_size = queue_size
        self._clients: dict[uuid.UUID, set[LiveClient]] = defaultdict(set)
        self._listener: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    def channel(self, tenant_id: uuid.UUID) -> str:
        return f"{self.prefix}:live:{tenant_id}"

    async def publish(self, tenant_id: uuid.UUID, messages: list[dict[str, Any]]) -> None:
        if self.redis is None:
            self.deliver(tenant_id, messages)
        else:
            await self.redis.publish(self.channel(tenant_id), orjson.dumps(messages))

    def deliver(self, tenant_id: uuid.UUID, messages: list[dict[str, Any]]) -> None:
        for client in list(self._clients.get(tenant_id, ())):
            client.offer(messages)

    async def attach(self, client: LiveClient) -> None:
        self._clients[client.tenant_id].add(client)
        WEBSOCKET_CLIENTS.inc()
        if self.redis is not None and self._listener is None:
            self._listener = asyncio.create_task(self._listen())
        if self.redis is not None:
            await asyncio.wait_for(self._subscribed.wait(), 5)

    def detach(self, client: LiveClient) -> None:
        clients = self._clients.get(client.tenant_id)
        if clients is not None and client in clients:
            clients.discard(client)
            WEBSOCKET_CLIENTS.dec()
            if not clients:
                del self._clients[client.tenant_id]

    async def _listen(self) -> None:
        """One pattern subscription for every tenant; reconnects after a Redis failure."""
        pattern = f"{self.prefix}:live:*"
        start = len(pattern) - 1
        pause = 0.5
        while True:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.psubscribe(pattern)
                self._subscribed.set()
                pause = 0.5
                async for message in pubsub.listen():
                    if message.get("type") != "pmessage":
                        continue
                    channel = message["channel"]
                    if isinstance(channel, bytes):
                        channel = channel.decode()
                    try:
                        tenant_id = uuid.UUID(channel[start:])
                        messages = orjson.loads(message["data"])
                    except ValueError:
                        continue
                    self.deliver(tenant_id, messages)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("live_subscription_lost", error=type(exc).__name__)
                self._subscribed.clear()
                await asyncio.sleep(pause)
                pause = min(pause * 2, 10.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    async def close(self) -> None:
        """Shutdown: every client is told the server is going away."""
        for clients in list(self._clients.values()):
            for client in list(clients):
                client.drop(GOING_AWAY)
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None


def _newest_fix(points: list[Point]) -> Point | None:
    for point in reversed(points):
        if point.lat is not None and point.valid:
            return point
    return None


class LivePublisher:
    """The worker's after-commit stage: each committed batch to the live feed."""

    def __init__(self, hub: LiveHub, *, timeout_s: float = 1.0) -> None:
        self.hub = hub
        self.timeout_s = timeout_s

    def messages(self, result: WriteResult) -> dict[uuid.UUID, list[dict[str, Any]]]:
        out: dict[uuid.UUID, list[dict[str, Any]]] = defaultdict(list)
        for device_id, contact in result.contacts.items():
            device, vehicle = str(device_id), str(contact.vehicle_id or "") or None
            fix = _newest_fix(result.new_points.get(device_id, []))
            if fix is not None:
                out[contact.tenant_id].append(
                    {
                        "type": "position",
                        "device_id": device,
                        "vehicle_id": vehicle,
                        "fix_time": iso_utc(fix.fix_time),
                        "lat": fix.lat,
                        "lon": fix.lon,
                        "speed_mps": fix.speed_mps,
                        "course_deg": fix.course_deg,
                        "altitude_m": fix.altitude_m,
                        "accuracy_m": fix.accuracy_m,
                        "battery_pct": fix.battery_pct,
                        "ignition": fix.ignition,
                    }
                )
            for event in result.events.get(device_id, ()):
                out[contact.tenant_id].append(
                    {
                        "type": "event",
                        "device_id": device,
                        "vehicle_id": vehicle,
                        "event": event.as_dict(),
                    }
                )
        return out

    async def __call__(self, result: WriteResult) -> None:
        for tenant_id, messages in self.messages(result).items():
            # Bounded: a slow Redis delays the next batch by at most this, never blocks it.
            await asyncio.wait_for(self.hub.publish(tenant_id, messages), self.timeout_s)


async def serve_client(
    websocket: WebSocket, hub: LiveHub, client: LiveClient, *, ping_s: float
) -> None:
    """Send the client's messages until it goes away, falls behind or the server stops."""
    try:
        try:
            await hub.attach(client)
        except TimeoutError:  # Redis unreachable: no live data to give
            await websocket.close(1011, "the live feed is unavailable; retry later")
            return
        await websocket.send_text(
            orjson.dumps(
                {
                    "type": "ready",
                    "vehicle_ids": sorted(map(str, client.vehicle_ids))
                    if client.vehicle_ids is not None
                    else None,
                    "types": sorted(client.types),
                }
            ).decode()
        )
        receiving = asyncio.create_task(_drain_incoming(websocket))
        try:
            while True:
                getting = asyncio.ensure_future(client.queue.get())
                done, _ = await asyncio.wait(
                    {getting, receiving}, timeout=ping_s, return_when=asyncio.FIRST_COMPLETED
                )
                if getting not in done:
                    getting.cancel()
                    if receiving in done:
                        break  # the client left
                    await websocket.send_text('{"type":"ping"}')
                    continue
                data = getting.result()
                if data is None:
                    break
                await websocket.send_text(data.decode())
        finally:
            receiving.cancel()
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect):
                await receiving
        code = client.close_code
        if code is not None and websocket.client_state == WebSocketState.CONNECTED:
            reason = "too slow: read faster" if code == SLOW else "server shutting down"
            with contextlib.suppress(Exception):
                await websocket.close(code, reason)
            if code == SLOW:
                log.info("live_client_dropped", tenant=str(client.tenant_id))
    except WebSocketDisconnect:
        pass
    finally:
        hub.detach(client)


async def _drain_incoming(websocket: WebSocket) -> None:
    # The client has nothing more to say; reading notices when it leaves.
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
