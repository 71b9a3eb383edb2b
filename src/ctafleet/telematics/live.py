"""The live feed: positions and derived events of the caller's tenant, pushed over a WebSocket.

    GET /api/v1/live?token=<access token>[&vehicle_id=<id>...][&department=<name>]
                    [&types=positions,events]

The access token comes as the `token` parameter, as the subprotocol pair
`Sec-WebSocket-Protocol: bearer, <token>` (the server answers `bearer`), or, when neither is
there, as the first message `{"type": "auth", "token": "..."}` within 5 seconds (browsers
cannot set headers on a WebSocket; a query string may end up in proxy logs). The caller needs
`telemetry:read`. A later `{"type": "auth", "token": "..."}` replaces the token: the
connection is checked again every `telemetry.live_recheck_s` (session, role, the vehicles the
filters and the role allow) and closed with 4401 once its token has expired.

Messages, JSON text, one per frame (docs/telemetry-live.md has examples):

    {"type": "ready", "vehicle_ids": [...] | null, "types": ["events", "positions"]}
    {"type": "position", "device_id", "vehicle_id", "last_message_at", "fix_time", "lat",
     "lon", "speed_mps", "course_deg", "altitude_m", "accuracy_m", "battery_pct", "ignition",
     "odometer_m"}                         a device's newest new fix of a committed batch
    {"type": "event", "device_id", "vehicle_id", "event": {key, device_uid, type, time, lat,
     lon, value, duration_s, limit, geofence_id}}
    {"type": "ping"}                       after telemetry.live_ping_s of silence

Close codes: 4400 bad filter, 4401 no valid token (or it expired), 4403 no permission, 1013
the client read too slowly (more than telemetry.live_client_queue batches behind: dropped so
that nothing else waits for it) or the feed is unavailable (Redis), 1001 the server is
shutting down (uvicorn itself closes with 1012 on SIGTERM, before the app's shutdown).

Delivery is best effort and at most once: a batch is published after it commits, and a client
that reconnects reads the present from GET /api/v1/telemetry/snapshot. With Redis the worker
publishes per tenant (channel `<queue prefix>:live:<tenant id>`) and every API process, through
one pattern subscription, fans out to its own clients; without Redis the in-process worker
hands messages to the hub directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import structlog
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from ctafleet.observability.metrics import LIVE_DROPPED, WEBSOCKET_CLIENTS
from ctafleet.telematics.derive.events import iso_utc
from ctafleet.telematics.ingest.writer import WriteResult
from ctafleet.telematics.points import Point

log = structlog.get_logger("ctafleet.live")

TYPES = frozenset({"positions", "events"})
SLOW = 1013  # "try again later": the client fell behind, or the feed is unavailable
GOING_AWAY = 1001
# How long a new client waits for this process's Redis subscription before it is refused.
SUBSCRIBE_WAIT_S = 5.0
# Batches the publisher holds while Redis is slow; beyond, the oldest is dropped (counted).
PUBLISH_BACKLOG = 64

# One message as the hub hands it to clients: its kind ("positions"/"events"), its vehicle and
# its JSON text, encoded once for every client.
Frame = tuple[str, uuid.UUID | None, str]


class Refused(Exception):
    """A connection that may no longer receive the feed: closed with `code`."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class LiveClient:
    """One connected WebSocket: its tenant, its filters and a bounded queue of batches."""

    def __init__(
        self,
        *,
        tenant_id: uuid.UUID,
        vehicle_ids: frozenset[uuid.UUID] | None,
        types: frozenset[str],
        queue_size: int,
        token: str = "",
    ) -> None:
        self.tenant_id = tenant_id
        # None: every vehicle of the tenant (and messages of devices without one).
        self.vehicle_ids = vehicle_ids
        self.types = types
        # The latest access token the client presented (kept for the periodic check only).
        self.token = token
        # One entry per delivered batch: a batch of a big tenant is one entry, not hundreds.
        self.queue: asyncio.Queue[tuple[str, ...] | None] = asyncio.Queue(queue_size)
        self.close_code: int | None = None  # set when the connection is to end
        self.close_reason = ""
        self.ended = asyncio.Event()

    def offer(self, frames: list[Frame]) -> None:
        """Queue what of a batch passes the filters; never waits (a full queue drops it)."""
        if self.close_code is not None:
            return
        vehicles = self.vehicle_ids
        picked = tuple(
            text
            for kind, vehicle, text in frames
            if kind in self.types and (vehicles is None or vehicle in vehicles)
        )
        if not picked:
            return
        try:
            self.queue.put_nowait(picked)
        except asyncio.QueueFull:
            LIVE_DROPPED.labels(reason="slow_client").inc()
            log.info("live_client_dropped", tenant=str(self.tenant_id))
            self.drop(SLOW, "too slow: read faster")

    def drop(self, code: int, reason: str) -> None:
        """End the connection: what is queued is discarded, the sender wakes and closes."""
        if self.close_code is None:
            self.close_code = code
            self.close_reason = reason
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(None)
            self.ended.set()


def _frames(messages: list[dict[str, Any]]) -> list[Frame]:
    out: list[Frame] = []
    for message in messages:
        vehicle = message.get("vehicle_id")
        out.append(
            (
                "positions" if message.get("type") == "position" else "events",
                uuid.UUID(vehicle) if isinstance(vehicle, str) else None,
                orjson.dumps(message).decode(),
            )
        )
    return out


class LiveHub:
    """This process's live clients, and the Redis subscription that feeds them (the worker's
    publisher uses the same class to publish)."""

    def __init__(self, *, redis: Any, prefix: str, queue_size: int = 64) -> None:
        self.redis = redis
        self.prefix = prefix
        self.queue_size = queue_size
        self._clients: dict[uuid.UUID, set[LiveClient]] = defaultdict(set)
        self._listener: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        self._closed = False

    def channel(self, tenant_id: uuid.UUID) -> str:
        return f"{self.prefix}:live:{tenant_id}"

    @property
    def clients(self) -> int:
        return sum(len(c) for c in self._clients.values())

    async def publish(self, by_tenant: dict[uuid.UUID, list[dict[str, Any]]]) -> None:
        """One batch's messages, per tenant: to Redis in one round trip, or to this process's
        clients directly (which never waits)."""
        if self.redis is None:
            for tenant_id, messages in by_tenant.items():
                self.deliver(tenant_id, messages)
            return
        pipe = self.redis.pipeline(transaction=False)
        for tenant_id, messages in by_tenant.items():
            pipe.publish(self.channel(tenant_id), orjson.dumps(messages))
        await pipe.execute()

    def deliver(self, tenant_id: uuid.UUID, messages: list[dict[str, Any]]) -> None:
        clients = self._clients.get(tenant_id)
        if not clients:
            return
        frames = _frames(messages)
        for client in list(clients):
            client.offer(frames)

    async def attach(self, client: LiveClient) -> None:
        """Register the client; with Redis, once this process is subscribed (`Refused` if it
        cannot be within SUBSCRIBE_WAIT_S: the client retries later)."""
        if self._closed:
            raise Refused(GOING_AWAY, "server shutting down")
        self._clients[client.tenant_id].add(client)
        WEBSOCKET_CLIENTS.inc()
        if self.redis is None:
            return
        if self._listener is None or self._listener.done():
            self._listener = asyncio.create_task(self._listen())
        try:
            await asyncio.wait_for(self._subscribed.wait(), SUBSCRIBE_WAIT_S)
        except TimeoutError:
            self.detach(client)
            raise Refused(SLOW, "live feed unavailable: retry later") from None

    def detach(self, client: LiveClient) -> None:
        clients = self._clients.get(client.tenant_id)
        if clients is not None and client in clients:
            clients.discard(client)
            WEBSOCKET_CLIENTS.dec()
            if not clients:
                del self._clients[client.tenant_id]

    def _drop_all(self, code: int, reason: str) -> None:
        for clients in list(self._clients.values()):
            for client in list(clients):
                client.drop(code, reason)

    async def _listen(self) -> None:
        """One pattern subscription for every tenant; reconnects after a Redis failure."""
        pattern = f"{self.prefix}:live:*"  # the prefix allows no glob characters (config)
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
                    except ValueError:
                        continue
                    if tenant_id not in self._clients:  # nobody here: skip decoding it
                        continue
                    try:
                        messages = orjson.loads(message["data"])
                    except orjson.JSONDecodeError:
                        continue
                    self.deliver(tenant_id, messages)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("live_subscription_lost", error=type(exc).__name__)
                self._subscribed.clear()
                # What was published meanwhile is lost: clients reconnect and read the snapshot
                # rather than believe they are still live.
                self._drop_all(SLOW, "live feed interrupted: reconnect")
                await asyncio.sleep(pause)
                pause = min(pause * 2, 10.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    async def close(self) -> None:
        """Shutdown: every client is told the server is going away."""
        self._closed = True
        self._drop_all(GOING_AWAY, "server shutting down")
        # Their senders close them; a moment for that before the database goes away.
        for _ in range(40):
            if not self.clients:
                break
            await asyncio.sleep(0.05)
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None


def _newest_fix(points: list[Point]) -> Point | None:
    for point in reversed(points):
        if point.has_fix:
            return point
    return None


class LivePublisher:
    """The worker's after-commit stage: each committed batch to the live feed.

    It never makes the worker wait: in-process delivery only queues, and a Redis publish runs
    in a background task, one batch at a time in commit order, each bounded by `timeout_s`. A
    failed publish and a batch pushed out of a full backlog are logged and counted."""

    def __init__(
        self, hub: LiveHub, *, timeout_s: float = 1.0, backlog: int = PUBLISH_BACKLOG
    ) -> None:
        self.hub = hub
        self.timeout_s = timeout_s
        self._pending: deque[dict[uuid.UUID, list[dict[str, Any]]]] = deque()
        self._backlog = backlog
        self._task: asyncio.Task[None] | None = None

    @staticmethod
    def messages(result: WriteResult) -> dict[uuid.UUID, list[dict[str, Any]]]:
        out: dict[uuid.UUID, list[dict[str, Any]]] = defaultdict(list)
        for device_id, contact in result.contacts.items():
            device = str(device_id)
            vehicle = str(contact.vehicle_id) if contact.vehicle_id is not None else None
            fix = _newest_fix(result.new_points.get(device_id, []))
            if fix is not None:
                out[contact.tenant_id].append(
                    {
                        "type": "position",
                        "device_id": device,
                        "vehicle_id": vehicle,
                        "last_message_at": iso_utc(contact.last_message_at),
                        "fix_time": iso_utc(fix.fix_time),
                        "lat": fix.lat,
                        "lon": fix.lon,
                        "speed_mps": fix.speed_mps,
                        "course_deg": fix.course_deg,
                        "altitude_m": fix.altitude_m,
                        "accuracy_m": fix.accuracy_m,
                        "battery_pct": fix.battery_pct,
                        "ignition": fix.ignition,
                        "odometer_m": fix.odometer_m,
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
        try:
            by_tenant = self.messages(result)
            if not by_tenant:
                return
            if self.hub.redis is None:
                await self.hub.publish(by_tenant)
                return
            if len(self._pending) >= self._backlog:
                self._lost(self._pending.popleft(), "backlog_full")
            self._pending.append(by_tenant)
            if self._task is None or self._task.done():
                self._task = asyncio.create_task(self._flush())
        except Exception as exc:  # a side feed never fails the batch
            LIVE_DROPPED.labels(reason="publish_failed").inc()
            log.warning("live_publish_failed", error=type(exc).__name__)

    async def _flush(self) -> None:
        while self._pending:
            by_tenant = self._pending.popleft()
            try:
                await asyncio.wait_for(self.hub.publish(by_tenant), self.timeout_s)
            except Exception as exc:
                self._lost(by_tenant, type(exc).__name__)

    def _lost(self, by_tenant: dict[uuid.UUID, list[dict[str, Any]]], why: str) -> None:
        LIVE_DROPPED.labels(reason="publish_failed").inc()
        log.warning("live_publish_failed", error=why, tenants=len(by_tenant))

    async def flushed(self) -> None:
        """Wait until what was handed over is published (tests, a worker's shutdown)."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)


# Checks the connection again (`Refused` to end it) and answers the vehicles it may now see.
Recheck = Callable[[LiveClient], Awaitable[frozenset[uuid.UUID] | None]]


async def serve_client(
    websocket: WebSocket,
    hub: LiveHub,
    client: LiveClient,
    *,
    ping_s: float,
    recheck: Recheck | None = None,
    recheck_s: float = 60.0,
) -> None:
    """Send the client's messages until it goes away, falls behind or the server stops.

    Sending runs in a task of its own: a client that stopped reading blocks only that task,
    which is cancelled when the client is dropped, so the close follows at once."""
    try:
        await hub.attach(client)
    except Refused as exc:
        with contextlib.suppress(RuntimeError, OSError, WebSocketDisconnect):
            await websocket.close(exc.code, exc.reason)
        return
    tasks: list[asyncio.Task[None]] = []
    try:
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
        tasks.append(asyncio.create_task(_sending(websocket, client, ping_s)))
        tasks.append(asyncio.create_task(_incoming(websocket, client)))
        if recheck is not None:
            tasks.append(asyncio.create_task(_rechecking(client, recheck, recheck_s)))
        await client.ended.wait()
    except (WebSocketDisconnect, OSError, RuntimeError):
        pass  # the client left before the first frame
    finally:
        hub.detach(client)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if client.close_code is not None and websocket.client_state == WebSocketState.CONNECTED:
            # Bounded by the server's close timeout even if the client reads nothing more.
            with contextlib.suppress(Exception):
                await websocket.close(client.close_code, client.close_reason)


async def _sending(websocket: WebSocket, client: LiveClient, ping_s: float) -> None:
    try:
        while True:
            try:
                batch = await asyncio.wait_for(client.queue.get(), ping_s)
            except TimeoutError:
                await websocket.send_text('{"type":"ping"}')
                continue
            if batch is None:
                return
            for text in batch:
                await websocket.send_text(text)
    except (WebSocketDisconnect, OSError, RuntimeError):
        client.drop(1000, "")  # the client left while a frame was on its way


async def _incoming(websocket: WebSocket, client: LiveClient) -> None:
    """Reads until the client leaves; `{"type": "auth", "token": ...}` renews the token."""
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if not text or len(text) > 16_384:
                continue
            with contextlib.suppress(orjson.JSONDecodeError):
                data = orjson.loads(text)
                if isinstance(data, dict) and data.get("type") == "auth":
                    token = data.get("token")
                    if isinstance(token, str) and token:
                        client.token = token
    finally:
        client.drop(1000, "")  # wakes the sender at once; nothing is sent to a closed socket


async def _rechecking(client: LiveClient, recheck: Recheck, every_s: float) -> None:
    while client.close_code is None:
        await asyncio.sleep(every_s)
        try:
            client.vehicle_ids = await recheck(client)
        except Refused as exc:
            client.drop(exc.code, exc.reason)
        except Exception as exc:  # the database is away: keep the filters, try next time
            log.warning("live_recheck_failed", error=type(exc).__name__)
