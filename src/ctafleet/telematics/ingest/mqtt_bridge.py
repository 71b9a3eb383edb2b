"""The MQTT bridge (`ctafleet mqtt`): device messages from the broker into the telemetry queue.

    topic    <topic prefix>/<device unique id>        (default prefix ctafleet/v1/telemetry)
    QoS      1
    payload  the JSON batch of POST /api/v1/telemetry with the device's credential added:
             {"device": "<unique id>", "credential": "ctd_...", "points": [{...}, ...]}

The credential must belong to the topic's device (and `device`, when given, name it too). The
credential is removed and the rest checked point by point exactly as the batch API does.

Delivery: one session at the broker, persistent (MQTT 5: clean start off and a session expiry;
MQTT 3.1.1: clean session off), so what is published while the bridge is down waits there.
A message is acknowledged (PUBACK) only once its points are in the queue, or once it is clear
it can never be taken (not JSON, wrong credential, no such device: redelivering those forever
helps nobody). A message the queue cannot take now (full, Redis down) stays unacknowledged
and is retried.

paho runs the connection in its own thread; messages cross into the event loop and are
handled in lanes, a device always in the same lane, so each device's messages are queued in
the order the broker delivered them.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
import structlog
from sqlalchemy.exc import SQLAlchemyError

from ctafleet.db.engine import Database
from ctafleet.kernel import signals
from ctafleet.kernel.clock import Clock, SystemClock
from ctafleet.observability.metrics import INGEST_POINTS, MQTT_CONNECTED, MQTT_MESSAGES
from ctafleet.telematics import positions
from ctafleet.telematics.ingest import batch
from ctafleet.telematics.ingest.credentials import DEVICE_PREFIX, DeviceAuthenticator
from ctafleet.telematics.ingest.queue import QueueFull, QueueUnavailable, TelemetryQueue
from ctafleet.telematics.ingest.runtime import make_queue
from ctafleet.telematics.mqtt_url import parse_broker_url

if TYPE_CHECKING:
    from paho.mqtt.client import Client, MQTTMessage

log = structlog.get_logger("ctafleet.mqtt")

PROTOCOL = "mqtt"
LANES = 16
RETRY_FIRST_S = 0.2
RETRY_MAX_S = 5.0
RECONNECT_MIN_S = 1
RECONNECT_MAX_S = 30
# What is in hand when told to stop gets this long to reach the queue; the rest stays at the
# broker, unacknowledged, for the next session.
DRAIN_S = 10.0
# CONNACK reasons that retrying will not change: the settings are wrong.
FATAL_CONNACK = {
    133: "the client id is not valid (CTAFLEET_MQTT__CLIENT_ID)",
    134: "bad user name or password (CTAFLEET_MQTT__URL)",
    135: "not authorized (CTAFLEET_MQTT__URL's user)",
    138: "this client is banned",
    140: "bad authentication method",
}
_TRANSIENT = (QueueFull, QueueUnavailable, SQLAlchemyError, OSError, TimeoutError)


class BridgeError(Exception):
    """The broker refused the bridge for a reason the operator must fix."""


@dataclass(frozen=True, slots=True)
class _Message:
    connection: int  # which broker connection delivered it: its mid means nothing on another
    mid: int
    qos: int
    unique_id: str | None  # from the topic; None for a topic that is no device's
    payload: bytes


class _Refused(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class Counts:
    """What this bridge did, by message (the points are in INGEST_POINTS)."""

    accepted: int = 0
    rejected: int = 0
    deferred: int = 0  # retries of messages the queue could not take at the time
    reasons: Counter[str] = field(default_factory=Counter)


class MqttBridge:
    def __init__(
        self,
        *,
        config: Any,  # MqttSettings
        auth: DeviceAuthenticator,
        queue: TelemetryQueue,
        clock: Clock,
        max_points: int,
        max_bytes: int,
    ) -> None:
        self.config = config
        self.broker = parse_broker_url(config.url)
        self.topic_prefix = config.topic_prefix.rstrip("/")
        self.auth = auth
        self.queue = queue
        self.clock = clock
        self.max_points = max_points
        self.max_bytes = max_bytes
        self.counts = Counts()
        # Set while subscribed on a live connection (tests wait for it before publishing).
        self.subscribed = asyncio.Event()
        self._lock = threading.Lock()
        self._connection = 0
        self._client: Client | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lanes: list[asyncio.Queue[_Message]] = [asyncio.Queue() for _ in range(LANES)]
        self._stopping = asyncio.Event()
        self._fatal: asyncio.Future[str] | None = None

    # --- the event loop's side ---------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Until `stop` is set; raises BridgeError when the broker refuses the settings."""
        self._loop = loop = asyncio.get_running_loop()
        self._fatal = loop.create_future()
        client = self._make_client()
        workers = [asyncio.create_task(self._lane(lane)) for lane in self._lanes]
        stopping = asyncio.create_task(stop.wait())
        log.info(
            "mqtt_bridge_started",
            broker=self.broker.where,
            client_id=self.config.client_id,
            topic=self._subscription,
        )
        if self._v5:
            client.connect_async(
                self.broker.host,
                self.broker.port,
                keepalive=self.config.keepalive_s,
                clean_start=False,
                properties=self._connect_properties(),
            )
        else:  # the session's persistence was chosen with the client (clean_session off)
            client.connect_async(
                self.broker.host, self.broker.port, keepalive=self.config.keepalive_s
            )
        client.loop_start()
        try:
            ends: list[asyncio.Future[Any]] = [stopping, self._fatal]
            await asyncio.wait(ends, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            # New messages are no longer taken (left unacknowledged, so the broker keeps them
            # for the session); what is in hand is finished before disconnecting. Never an
            # unsubscribe: that would end the session's subscription, and with it the keeping.
            self._stopping.set()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(DRAIN_S):
                    await asyncio.gather(*(lane.join() for lane in self._lanes))
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            with self._lock:
                self._connection += 1  # no acknowledgement goes out from here on
            client.disconnect()
            await asyncio.to_thread(client.loop_stop)
            MQTT_CONNECTED.set(0)
            log.info(
                "mqtt_bridge_stopped",
                accepted=self.counts.accepted,
                rejected=self.counts.rejected,
                deferred=self.counts.deferred,
            )
        if self._fatal.done():
            raise BridgeError(self._fatal.result())

    @property
    def _v5(self) -> bool:
        return bool(self.config.protocol == "5")

    @property
    def _subscription(self) -> str:
        return f"{self.topic_prefix}/+"

    def _dispatch(self, message: _Message) -> None:
        if self._stopping.is_set():
            return  # not acknowledged: the broker sends it to the next session
        key = (message.unique_id or "").encode()
        self._lanes[zlib.crc32(key) % len(self._lanes)].put_nowait(message)

    async def _lane(self, lane: asyncio.Queue[_Message]) -> None:
        left = False
        while True:
            message = await lane.get()
            try:
                # Once one is left at the broker (stopping), so are the lane's later ones:
                # queued now, they would overtake it.
                if not left:
                    left = not await self._handle(message)
            finally:
                lane.task_done()

    async def _handle(self, message: _Message) -> bool:
        """True once the message is done with (queued or refused, and acknowledged)."""
        # A message the queue cannot take is retried here, in its lane, rather than by
        # disconnecting for the broker to redeliver: the device's later messages wait behind
        # it (order kept), the broker holds the rest (at most `inflight` are in our hands),
        # and no redelivery storm hits a queue that is still full. Stopping or a lost
        # connection leave it unacknowledged at the broker all the same.
        delay = RETRY_FIRST_S
        while True:
            try:
                await self._accept(message)
                break
            except _Refused as exc:
                self._reject(message, exc.reason)
                break
            except _TRANSIENT as exc:
                self.counts.deferred += 1
                MQTT_MESSAGES.labels("deferred").inc()
                if delay == RETRY_FIRST_S:
                    log.warning(
                        "mqtt_message_deferred", device=message.unique_id, error=type(exc).__name__
                    )
                if self._stopping.is_set():
                    return False
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._stopping.wait()
                if self._stopping.is_set():
                    return False  # unacknowledged: the broker keeps it for the next session
                delay = min(delay * 2, RETRY_MAX_S)
            except Exception:
                # A bug: retrying would repeat it and hold up every device behind it.
                log.exception("mqtt_message_failed", device=message.unique_id)
                self._reject(message, "error")
                break
        self._ack(message)
        return True

    async def _accept(self, message: _Message) -> None:
        if message.unique_id is None:
            raise _Refused("bad-topic")
        if len(message.payload) > self.max_bytes:
            raise _Refused("too-large")
        try:
            document = orjson.loads(message.payload)
        except orjson.JSONDecodeError:
            raise _Refused("bad-json") from None
        if not isinstance(document, dict):
            raise _Refused("bad-batch")
        credential = document.pop("credential", None)
        if not isinstance(credential, str) or not credential.startswith(DEVICE_PREFIX):
            raise _Refused("unauthorized")
        device = await self.auth.device(credential, message.unique_id)
        if device is None:
            raise _Refused("unauthorized")
        try:
            result = await positions.accept_batch(
                session=None,
                actor=None,
                device=device,
                queue=self.queue,
                body=orjson.dumps(document),  # the batch, without the credential
                now=self.clock.now(),
                max_points=self.max_points,
            )
        except batch.BatchError as exc:
            raise _Refused(exc.reason) from None
        self.counts.accepted += 1
        MQTT_MESSAGES.labels("accepted").inc()
        INGEST_POINTS.labels(PROTOCOL, "accepted", "").inc(result.accepted)
        for r in result.rejected:
            INGEST_POINTS.labels(PROTOCOL, "rejected", r.reason).inc()
            self.counts.reasons[r.reason] += 1

    def _reject(self, message: _Message, reason: str) -> None:
        self.counts.rejected += 1
        self.counts.reasons[reason] += 1
        MQTT_MESSAGES.labels("rejected").inc()
        INGEST_POINTS.labels(PROTOCOL, "rejected", reason).inc()
        log.info("mqtt_message_rejected", device=message.unique_id, reason=reason)

    def _ack(self, message: _Message) -> None:
        if message.qos == 0:
            return
        with self._lock:
            # A mid of an earlier connection may name another message on this one: that
            # message comes again instead (a duplicate is stored once).
            if message.connection != self._connection or self._client is None:
                return
            self._client.ack(message.mid, message.qos)

    # --- paho's network thread ---------------------------------------------------------------

    def _make_client(self) -> Client:
        from paho.mqtt.client import Client
        from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

        if self._v5:
            client = Client(
                CallbackAPIVersion.VERSION2,
                client_id=self.config.client_id,
                protocol=MQTTProtocolVersion.MQTTv5,
                manual_ack=True,
            )
        else:
            client = Client(
                CallbackAPIVersion.VERSION2,
                client_id=self.config.client_id,
                protocol=MQTTProtocolVersion.MQTTv311,
                clean_session=False,
                manual_ack=True,
            )
        if self.broker.username is not None:
            client.username_pw_set(self.broker.username, self.broker.password)
        if self.broker.tls:
            ca = self.config.ca_file  # empty: the system's CA certificates
            client.tls_set(ca_certs=str(ca) if ca else None)
        client.reconnect_delay_set(min_delay=RECONNECT_MIN_S, max_delay=RECONNECT_MAX_S)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        self._client = client
        return client

    def _connect_properties(self) -> Any:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = self.config.session_expiry_s
        properties.ReceiveMaximum = self.config.inflight
        return properties

    def _to_loop(self, callback: Callable[..., Any], *args: Any) -> None:
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed: we are stopping
                loop.call_soon_threadsafe(callback, *args)

    def _on_connect(self, client: Client, _u: Any, flags: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            fatal = FATAL_CONNACK.get(int(reason.value))
            log.warning("mqtt_connect_refused", broker=self.broker.where, reason=str(reason))
            if fatal is not None:
                self._to_loop(
                    self._fail,
                    f"the MQTT broker at {self.broker.where} refused the bridge: {fatal}",
                )
            return
        with self._lock:
            self._connection += 1
        MQTT_CONNECTED.set(1)
        log.info(
            "mqtt_connected",
            broker=self.broker.where,
            client_id=self.config.client_id,
            session_present=bool(flags.session_present),
        )
        # Also with a session present: a session that expired meanwhile has no subscription.
        client.subscribe(self._subscription, qos=1)

    def _on_connect_fail(self, _c: Any, _u: Any) -> None:
        log.warning("mqtt_connect_failed", broker=self.broker.where)

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        with self._lock:
            self._connection += 1
        MQTT_CONNECTED.set(0)
        self._to_loop(self.subscribed.clear)
        if self._stopping.is_set():
            log.info("mqtt_disconnected", broker=self.broker.where)
        else:
            log.warning("mqtt_disconnected", broker=self.broker.where, reason=str(reason))

    def _on_subscribe(self, _c: Any, _u: Any, _mid: int, reasons: Any, _p: Any) -> None:
        granted = reasons[0] if reasons else None
        if granted is None or granted.is_failure or int(granted.value) < 1:
            self._to_loop(
                self._fail,
                f"the MQTT broker at {self.broker.where} refused the subscription to "
                f"{self._subscription} at QoS 1: {granted}",
            )
            return
        log.info("mqtt_subscribed", topic=self._subscription)
        self._to_loop(self.subscribed.set)

    def _on_message(self, _c: Any, _u: Any, message: MQTTMessage) -> None:
        prefix = self.topic_prefix + "/"
        try:
            topic = message.topic
        except UnicodeDecodeError:
            topic = ""
        uid = topic[len(prefix) :] if topic.startswith(prefix) else ""
        with self._lock:
            connection = self._connection
        item = _Message(
            connection=connection,
            mid=message.mid,
            qos=message.qos,
            unique_id=uid if uid and "/" not in uid else None,
            payload=bytes(message.payload),
        )
        self._to_loop(self._dispatch, item)

    def _fail(self, reason: str) -> None:
        if self._fatal is not None and not self._fatal.done():
            self._fatal.set_result(reason)


# --- the process ---------------------------------------------------------------------------


async def serve(settings: Any, *, stop: asyncio.Event, clock: Clock | None = None) -> MqttBridge:
    """Run the bridge on the settings' broker and Redis queue until `stop` is set."""
    import redis.asyncio as aioredis

    if not settings.redis.url:
        raise ValueError("the MQTT bridge feeds the Redis queue: set CTAFLEET_REDIS__URL")
    clock = clock or SystemClock()
    redis = aioredis.from_url(settings.redis.url, socket_timeout=5, socket_connect_timeout=2)
    db = Database(settings.database_url, settings)
    bridge = MqttBridge(
        config=settings.mqtt,
        auth=DeviceAuthenticator(db, clock, ttl_s=settings.telemetry.credential_cache_ttl_s),
        queue=make_queue(settings, redis),
        clock=clock,
        max_points=settings.telemetry.max_batch_points,
        max_bytes=settings.http.max_body_bytes,
    )
    try:
        await bridge.run(stop)
    finally:
        await db.dispose()
        await redis.aclose()
    return bridge


def run_until_signalled(settings: Any) -> None:
    signals.run_until_signalled(lambda stop: serve(settings, stop=stop))
