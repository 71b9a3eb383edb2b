"""The MQTT bridge on the real broker, Redis and PostgreSQL: what devices publish is stored once;
refused messages are acknowledged and counted; a full queue leaves messages unacknowledged at
the broker until there is room; the persistent session keeps what arrives while the bridge is
down; `ctafleet mqtt` as a process.

Each test has its own client id, topic prefix and queue prefix, so parallel runs never see each
other's messages."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import pytest_asyncio
import structlog
import structlog.testing
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from typer.testing import CliRunner

from ctafleet.cli import app as cli_app
from ctafleet.db.migrate import upgrade
from ctafleet.observability.metrics import REGISTRY
from ctafleet.telematics.ingest.envelope import Envelope
from ctafleet.telematics.ingest.mqtt_bridge import MqttBridge
from ctafleet.telematics.ingest.worker import Worker
from ctafleet.telematics.mqtt_url import parse_broker_url
from ctafleet.telematics.points import Point
from tests.conftest import service_unavailable
from tests.kit.app import Api, Backend, own_app
from tests.kit.net import free_listen_port, stop_process, wait_listening
from tests.telematics.ingest.kit import device, positions

SHARDS = 4


@pytest.fixture(scope="module")
def pg_backend(fresh_pg: Any) -> Backend:
    pg = fresh_pg()
    asyncio.run(upgrade(pg.owner_url, app_role=pg.app_role))
    return Backend("postgres", pg.app_url, pg.owner_url, pg)


def _mqtt_settings(mqtt_url: str) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:10]
    return {
        "url": mqtt_url,
        "client_id": f"test-bridge-{tag}",
        "topic_prefix": f"test/{tag}/telemetry",
        "session_expiry_s": 60,  # the broker forgets a test's session soon after
    }


@asynccontextmanager
async def _app(
    backend: Backend, tmp: Path, redis_url: str, prefix: str, mqtt: dict[str, Any], **telemetry: Any
) -> AsyncIterator[Api]:
    async with own_app(
        backend,
        tmp,
        redis={"url": redis_url},
        telemetry={"queue_prefix": prefix, "queue_shards": SHARDS, **telemetry},
        mqtt=mqtt,
    ) as api:
        yield api


@pytest_asyncio.fixture
async def app(
    pg_backend: Backend, redis_url: str, queue_prefix: str, mqtt_url: str, tmp_path: Path
) -> AsyncIterator[Api]:
    async with _app(pg_backend, tmp_path, redis_url, queue_prefix, _mqtt_settings(mqtt_url)) as api:
        yield api


def _new_bridge(api: Api, **config: Any) -> MqttBridge:
    """A bridge on the app's queue and authenticator, its settings changed by `config`."""
    telemetry = api.app.state.ctafleet.telemetry
    return MqttBridge(
        config=api.settings.mqtt.model_copy(update=config),
        auth=telemetry.auth,
        queue=telemetry.queue,
        clock=api.clock,
        max_points=api.settings.telemetry.max_batch_points,
        max_bytes=api.settings.http.max_body_bytes,
    )


@asynccontextmanager
async def _bridge(api: Api, **config: Any) -> AsyncIterator[MqttBridge]:
    """`_new_bridge`, running and subscribed when this yields."""
    bridge = _new_bridge(api, **config)
    stop = asyncio.Event()
    task = asyncio.create_task(bridge.run(stop))
    try:
        async with asyncio.timeout(10):
            waiting = asyncio.create_task(bridge.subscribed.wait())
            await asyncio.wait({waiting, task}, return_when=asyncio.FIRST_COMPLETED)
            if task.done():
                task.result()  # its error
            await waiting
        yield bridge
    finally:
        stop.set()
        await task


class Publisher:
    """A device side: paho publishing at QoS 1, each publish waited for (broker's PUBACK)."""

    def __init__(self, url: str, ca_file: Path | None = None) -> None:
        from paho.mqtt.client import Client
        from paho.mqtt.enums import CallbackAPIVersion

        broker = parse_broker_url(url)
        self.client = Client(CallbackAPIVersion.VERSION2, client_id=f"test-pub-{uuid.uuid4().hex}")
        if broker.username:
            self.client.username_pw_set(broker.username, broker.password)
        if broker.tls:
            self.client.tls_set(ca_certs=str(ca_file))
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    async def publish(self, topic: str, payload: bytes | dict[str, Any]) -> None:
        body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        info = self.client.publish(topic, body, qos=1)
        await asyncio.to_thread(info.wait_for_publish, 10)
        assert info.is_published(), f"the broker did not acknowledge {topic}"

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def publisher(mqtt_url: str) -> Iterator[Publisher]:
    p = Publisher(mqtt_url)
    yield p
    p.close()


def _topic(api: Api, unique_id: str) -> str:
    return f"{api.settings.mqtt.topic_prefix}/{unique_id}"


def _track(api: Api, n: int, start_s: float = -3600) -> list[dict[str, Any]]:
    start = api.clock.now() + timedelta(seconds=start_s)
    return [
        {
            "time": (start + timedelta(seconds=i)).isoformat().replace("+00:00", "Z"),
            "lat": 41.88 + i * 1e-4,
            "lon": -87.63,
            "speed": 10.0,
        }
        for i in range(n)
    ]


def _message(d: dict[str, Any], points: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"device": d["unique_id"], "credential": d["credential"], "points": points, **extra}


async def _until(predicate: Any, what: str, limit_s: float = 15) -> None:
    deadline = time.monotonic() + limit_s
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def _drain(api: Api) -> int:
    """A worker on the Redis queue until it is empty; the points it stored."""
    worker = Worker(db=api.db, queue=api.app.state.ctafleet.telemetry.queue, clock=api.clock)
    worker.block_s = 0
    stored = 0
    while True:
        outcome = await worker.run_once()
        stored += outcome.stored
        if outcome.entries == 0:
            return stored


def _points_metric(outcome: str, reason: str = "") -> float:
    labels = {"protocol": "mqtt", "outcome": outcome, "reason": reason}
    return REGISTRY.get_sample_value("ctafleet_ingest_points_total", labels) or 0.0


async def test_published_points_are_stored_once_and_the_message_is_acknowledged(
    app: Api, publisher: Publisher
) -> None:
    tenant = await app.tenant(roles=["admin"])
    d = await device(app, tenant)
    accepted_before = _points_metric("accepted")
    async with _bridge(app) as bridge:
        await publisher.publish(_topic(app, d["unique_id"]), _message(d, _track(app, 3)))
        await _until(lambda: bridge.counts.accepted == 1, "the message to be queued")
    assert await _drain(app) == 3
    stored = await positions(app, d["id"])
    assert [p.lat for p in stored] == pytest.approx([41.88, 41.8801, 41.8802])
    assert _points_metric("accepted") - accepted_before == 3
    # Acknowledged: the same session gets only what is published next, not the first again.
    async with _bridge(app) as bridge:
        await publisher.publish(_topic(app, d["unique_id"]), _message(d, _track(app, 1, -60)))
        await _until(lambda: bridge.counts.accepted == 1, "the second message")
        await asyncio.sleep(0.3)
        assert bridge.counts.accepted == 1
    assert await _drain(app) == 1
    assert len(await positions(app, d["id"])) == 4


async def test_a_wrong_credential_or_another_devices_topic_is_refused_and_never_logged(
    app: Api, publisher: Publisher
) -> None:
    tenant = await app.tenant(roles=["admin"])
    a, b = await device(app, tenant), await device(app, tenant)
    unauthorized_before = _points_metric("rejected", "unauthorized")
    topic_a = _topic(app, a["unique_id"])
    with structlog.testing.capture_logs() as logs:
        async with _bridge(app) as bridge:
            # b's credential on a's topic; a's credential naming b; a guessed credential;
            # none at all; then a good one (same lane: it comes last).
            await publisher.publish(topic_a, _message(b, _track(app, 1)))
            await publisher.publish(
                topic_a, {**_message(a, _track(app, 1)), "device": b["unique_id"]}
            )
            await publisher.publish(
                topic_a, {**_message(a, _track(app, 1)), "credential": "ctd_" + "x" * 40}
            )
            await publisher.publish(topic_a, {"device": a["unique_id"], "points": []})
            await publisher.publish(_topic(app, b["unique_id"]), _message(a, _track(app, 1)))
            await publisher.publish(topic_a, _message(a, _track(app, 2)))
            await _until(lambda: bridge.counts.accepted == 1, "the good message")
            await _until(lambda: bridge.counts.rejected == 5, "the refusals")
    assert bridge.counts.reasons == {"unauthorized": 4, "device-mismatch": 1}
    assert _points_metric("rejected", "unauthorized") - unauthorized_before == 4
    assert await _drain(app) == 2
    assert len(await positions(app, a["id"])) == 2
    assert await positions(app, b["id"]) == []
    logged = repr(logs)
    assert "mqtt_message_rejected" in logged
    assert a["credential"] not in logged
    assert b["credential"] not in logged


async def test_bad_json_does_not_stop_the_bridge(app: Api, publisher: Publisher) -> None:
    tenant = await app.tenant(roles=["admin"])
    d = await device(app, tenant)
    topic = _topic(app, d["unique_id"])
    async with _bridge(app) as bridge:
        await publisher.publish(topic, b"{not json")
        await publisher.publish(topic, b"[1, 2]")
        await publisher.publish(topic, {**_message(d, _track(app, 1)), "extra": 1})
        await publisher.publish(f"{app.settings.mqtt.topic_prefix}/", _message(d, _track(app, 1)))
        await publisher.publish(topic, _message(d, _track(app, 2)))
        await _until(lambda: bridge.counts.accepted == 1, "the good message")
        await _until(lambda: bridge.counts.rejected == 4, "the refusals")
    assert bridge.counts.reasons == {"bad-json": 1, "bad-batch": 2, "bad-topic": 1}
    assert await _drain(app) == 2


async def test_rejected_points_leave_the_valid_ones(app: Api, publisher: Publisher) -> None:
    tenant = await app.tenant(roles=["admin"])
    d = await device(app, tenant)
    good = _track(app, 2)
    points = [
        good[0],
        {**good[1], "lat": 95.0},  # off the globe
        {**good[1], "time": (app.clock.now() + timedelta(hours=1)).isoformat()},  # the future
        good[1],
    ]
    before = _points_metric("rejected", "bad-coordinates")
    async with _bridge(app) as bridge:
        await publisher.publish(_topic(app, d["unique_id"]), _message(d, points))
        await _until(lambda: bridge.counts.accepted == 1, "the message")
    assert bridge.counts.reasons == {"bad-coordinates": 1, "future-fix": 1}
    assert _points_metric("rejected", "bad-coordinates") - before == 1
    assert await _drain(app) == 2
    assert len(await positions(app, d["id"])) == 2


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_a_message_published_while_the_bridge_is_down_arrives_when_it_is_back(
    app: Api, publisher: Publisher, protocol: str
) -> None:
    tenant = await app.tenant(roles=["admin"])
    d = await device(app, tenant)
    async with _bridge(app, protocol=protocol):
        pass  # the session (and its subscription) now exists at the broker
    await publisher.publish(_topic(app, d["unique_id"]), _message(d, _track(app, 4)))
    async with _bridge(app, protocol=protocol) as bridge:
        await _until(lambda: bridge.counts.accepted == 1, "the message kept for the session")
    assert await _drain(app) == 4
    if protocol == "3.1.1":  # such a session has no expiry: end it
        await asyncio.to_thread(_end_session, app.settings.mqtt.url, app.settings.mqtt.client_id)


def _end_session(url: str, client_id: str) -> None:
    from paho.mqtt.client import Client
    from paho.mqtt.enums import CallbackAPIVersion

    broker = parse_broker_url(url)
    client = Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
    if broker.username:
        client.username_pw_set(broker.username, broker.password)
    client.connect(broker.host, broker.port)
    client.loop_start()
    client.disconnect()
    client.loop_stop()


async def test_a_message_waits_unacknowledged_while_the_queue_is_full(
    pg_backend: Backend,
    redis_url: str,
    queue_prefix: str,
    mqtt_url: str,
    tmp_path: Path,
    publisher: Publisher,
) -> None:
    mqtt = _mqtt_settings(mqtt_url)
    async with _app(
        pg_backend, tmp_path, redis_url, queue_prefix, mqtt, queue_max_entries=100
    ) as api:
        tenant = await api.tenant(roles=["admin"])
        d, filler = await device(api, tenant), await device(api, tenant)
        queue = api.app.state.ctafleet.telemetry.queue

        async def fill() -> None:
            point = Point(device_uid=filler["unique_id"], fix_time=api.clock.now(), lat=1, lon=1)
            envelope = Envelope(
                tenant_id=tenant.id,
                device_id=uuid.UUID(filler["id"]),
                vehicle_id=None,
                received_at=api.clock.now(),
                points=(point,),
            )
            await queue.put([envelope] * 100)

        async def make_room() -> None:
            deliveries = await queue.read(list(range(SHARDS)), count=1000, block_s=0)
            await queue.ack(deliveries)
            assert await queue.depth() == 0

        await fill()
        async with _bridge(api) as bridge:
            await publisher.publish(_topic(api, d["unique_id"]), _message(d, _track(api, 2)))
            await _until(lambda: bridge.counts.deferred >= 2, "retries on the full queue")
            assert bridge.counts.accepted == 0
            assert await queue.depth() == 100
        # Stopped with the message unacknowledged: the broker still has it.
        await make_room()
        async with _bridge(api) as bridge:
            await _until(lambda: bridge.counts.accepted == 1, "the redelivered message")
            # Full again while running: stored once room is made, without a restart.
            await _drain(api)
            await fill()
            await publisher.publish(
                _topic(api, d["unique_id"]), _message(d, _track(api, 1, start_s=-60))
            )
            await _until(lambda: bridge.counts.deferred >= 1, "a retry")
            await make_room()
            await _until(lambda: bridge.counts.accepted == 2, "the retried message")
        await _drain(api)
        assert len(await positions(api, d["id"])) == 3


@pytest.mark.parametrize("transport", ["mqtt", "mqtts"])
async def test_the_simulators_mqtt_sender_end_to_end(
    pg_backend: Backend,
    redis_url: str,
    queue_prefix: str,
    mqtt_url: str,
    tmp_path: Path,
    transport: str,
    request: pytest.FixtureRequest,
) -> None:
    from ctafleet.telematics.simulate import TOPIC_PREFIX, DeviceCredential, Options, simulate

    ca_file = None
    if transport == "mqtts":  # both sides verify the broker against the test's own CA
        broker: TlsBroker = request.getfixturevalue("tls_broker")
        mqtt_url, ca_file = broker.url, broker.ca_file
    # The simulator publishes under the default prefix; the devices are this test's own.
    mqtt = {
        **_mqtt_settings(mqtt_url),
        "topic_prefix": TOPIC_PREFIX.rstrip("/"),
        "ca_file": str(ca_file or ""),
    }
    async with _app(pg_backend, tmp_path, redis_url, queue_prefix, mqtt) as api:
        tenant = await api.tenant(roles=["admin"])
        devices = [await device(api, tenant) for _ in range(3)]
        async with _bridge(api) as bridge:
            stats = await simulate(
                options=Options(
                    protocol="mqtt",
                    mqtt_url=mqtt_url,
                    mqtt_ca_file=ca_file,
                    rate=30,
                    duration_s=1.5,
                    batch=5,
                    report_every_s=0,
                ),
                devices=[DeviceCredential(d["unique_id"], d["credential"]) for d in devices],
                start=api.clock.now() - timedelta(hours=1),
                echo=lambda _line: None,
            )
            assert stats.sent > 10
            assert stats.accepted == stats.sent
            assert stats.unsent == 0
            stored = 0

            async def all_stored() -> bool:
                nonlocal stored
                stored += await _drain(api)
                return stored >= stats.sent

            deadline = time.monotonic() + 20
            while not await all_stored():
                assert time.monotonic() < deadline, (stored, stats, bridge.counts)
                await asyncio.sleep(0.1)
        total = sum([len(await positions(api, d["id"])) for d in devices])
        assert total == stats.sent


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "ctafleet", *args], env=env, stdout=out, stderr=subprocess.STDOUT
        )


class Proxy:
    """A TCP relay in front of the broker that can cut every connection and refuse new ones:
    the broker going away, as the bridge sees it (the shared broker itself keeps running)."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.open = True
        self.port = 0
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.open:
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self._writers += [writer, up_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except OSError:
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def cut(self) -> None:
        self.open = False
        for w in self._writers:
            w.close()
        self._writers.clear()

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


async def test_the_bridge_reconnects_when_the_broker_goes_away(
    app: Api, publisher: Publisher
) -> None:
    tenant = await app.tenant(roles=["admin"])
    d = await device(app, tenant)
    broker = parse_broker_url(app.settings.mqtt.url)
    proxy = Proxy(broker.host, broker.port)
    await proxy.start()
    try:
        async with _bridge(app, url=f"mqtt://127.0.0.1:{proxy.port}") as bridge:
            proxy.cut()
            await _until(lambda: not bridge.subscribed.is_set(), "the bridge to notice")
            # Published while the bridge cannot reach the broker: kept for its session.
            await publisher.publish(_topic(app, d["unique_id"]), _message(d, _track(app, 2)))
            await asyncio.sleep(0.5)
            proxy.open = True
            await _until(bridge.subscribed.is_set, "the bridge to reconnect", 20)
            await _until(lambda: bridge.counts.accepted == 1, "the message after reconnecting")
            # Told to stop while the broker is away: it still stops, promptly.
            proxy.cut()
            await _until(lambda: not bridge.subscribed.is_set(), "the second cut")
            stopped_at = time.monotonic()
        assert time.monotonic() - stopped_at < 5
    finally:
        await proxy.close()
    assert await _drain(app) == 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def test_ctafleet_mqtt_runs_as_a_process_and_stops_on_sigterm(
    app: Api, publisher: Publisher, tmp_path: Path
) -> None:
    tenant = await app.tenant(roles=["admin"])
    d = await device(app, tenant)
    s = app.settings
    port = _free_port()
    env = {
        **os.environ,
        "CTAFLEET_ENVIRONMENT": "test",
        "CTAFLEET_DATA_DIR": str(s.data_dir),
        "CTAFLEET_DATABASE__URL": s.database.url,
        "CTAFLEET_REDIS__URL": s.redis.url,
        "CTAFLEET_TELEMETRY__QUEUE_PREFIX": s.telemetry.queue_prefix,
        "CTAFLEET_TELEMETRY__QUEUE_SHARDS": str(s.telemetry.queue_shards),
        "CTAFLEET_MQTT__URL": s.mqtt.url,
        "CTAFLEET_MQTT__CLIENT_ID": s.mqtt.client_id,
        "CTAFLEET_MQTT__TOPIC_PREFIX": s.mqtt.topic_prefix,
        "CTAFLEET_MQTT__SESSION_EXPIRY_S": "60",
        "CTAFLEET_OBSERVABILITY__LOG_LEVEL": "INFO",
        "CTAFLEET_OBSERVABILITY__LOG_JSON": "true",
    }
    log = tmp_path / "mqtt.log"
    proc = _start(["mqtt", "--metrics-port", str(port)], env, log)
    try:
        await _until(
            lambda: "mqtt_subscribed" in log.read_text() or proc.poll() is not None,
            "the bridge to subscribe",
            30,
        )
        assert proc.poll() is None, log.read_text()
        await publisher.publish(_topic(app, d["unique_id"]), _message(d, _track(app, 3)))
        queue = app.app.state.ctafleet.telemetry.queue
        deadline = time.monotonic() + 15
        while await queue.depth() == 0:
            assert time.monotonic() < deadline, log.read_text()
            await asyncio.sleep(0.05)
        assert await _drain(app) == 3
        exposed = await asyncio.to_thread(
            lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        )
        text = exposed.decode()
        assert "ctafleet_mqtt_connected 1.0" in text
        assert 'ctafleet_ingest_points_total{outcome="accepted",protocol="mqtt",reason=""} 3.0' in (
            text
        )
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 20) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
    output = log.read_text()
    assert "mqtt_bridge_stopped" in output
    assert d["credential"] not in output
    assert "Traceback" not in output


def test_ctafleet_mqtt_refuses_to_run_without_redis(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli_app,
        ["mqtt"],
        env={"CTAFLEET_REDIS__URL": "", "CTAFLEET_DATA_DIR": str(tmp_path)},
    )
    assert result.exit_code == 1
    assert "set CTAFLEET_REDIS__URL" in result.output
    assert "Traceback" not in result.output


def test_a_broker_url_that_is_no_mqtt_url_is_a_settings_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli_app,
        ["mqtt"],
        env={"CTAFLEET_MQTT__URL": "http://broker", "CTAFLEET_DATA_DIR": str(tmp_path)},
    )
    assert result.exit_code == 2
    assert "CTAFLEET_MQTT__URL" in result.output


# --- mqtts:// ------------------------------------------------------------------------------


def _certificate(
    subject: str, key: ec.EllipticCurvePrivateKey, issuer: tuple[x509.Name, Any] | None = None
) -> x509.Certificate:
    """A CA certificate (no issuer) or a server certificate for 127.0.0.1 it signs."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer[0] if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
    )
    if issuer is None:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=0), True)
        return builder.sign(key, hashes.SHA256())
    builder = builder.add_extension(
        x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
    )
    return builder.sign(issuer[1], hashes.SHA256())


def _pem(path: Path, *items: x509.Certificate | ec.EllipticCurvePrivateKey) -> Path:
    out = b""
    for item in items:
        if isinstance(item, x509.Certificate):
            out += item.public_bytes(serialization.Encoding.PEM)
        else:
            out += item.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
    path.write_bytes(out)
    return path


@dataclass
class TlsBroker:
    url: str
    ca_file: Path  # the CA that signed the broker's certificate
    other_ca_file: Path  # a CA that did not


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[TlsBroker]:
    """A Mosquitto of the test's own with only a TLS listener, its certificate from a private
    CA made here."""
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(mosquitto).exists():
        service_unavailable("mosquitto is not installed (the mqtts:// tests)")
    ca_key, other_key, server_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    ca = _certificate("CTAFleet test CA", ca_key)
    ca_file = _pem(tmp_path / "ca.pem", ca)
    other_ca_file = _pem(tmp_path / "other-ca.pem", _certificate("Another CA", other_key))
    cert = _pem(tmp_path / "server.pem", _certificate("broker", server_key, (ca.subject, ca_key)))
    key = _pem(tmp_path / "server.key", server_key)
    port = free_listen_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\n"
        f"cafile {ca_file}\ncertfile {cert}\nkeyfile {key}\n"
        "allow_anonymous true\npersistence false\nlog_dest stderr\n"
        "user root\n"  # started as root here: keep it, so it reads the test's 0600 files
    )
    log = (tmp_path / "mosquitto.log").open("wb")
    process = subprocess.Popen([mosquitto, "-c", str(conf)], stdout=log, stderr=log)
    try:
        wait_listening(port, process)
        yield TlsBroker(f"mqtts://127.0.0.1:{port}", ca_file, other_ca_file)
    finally:
        stop_process(process)
        log.close()


async def test_an_mqtts_broker_with_a_private_ca_is_verified_and_used(
    app: Api, tls_broker: TlsBroker
) -> None:
    tenant = await app.tenant(roles=["admin"])
    d = await device(app, tenant)
    publisher = Publisher(tls_broker.url, tls_broker.ca_file)
    try:
        async with _bridge(app, url=tls_broker.url, ca_file=str(tls_broker.ca_file)) as bridge:
            await publisher.publish(_topic(app, d["unique_id"]), _message(d, _track(app, 2)))
            await _until(lambda: bridge.counts.accepted == 1, "the message over TLS")
    finally:
        publisher.close()
    assert await _drain(app) == 2


async def test_an_mqtts_broker_whose_certificate_does_not_verify_is_never_used(
    app: Api, tls_broker: TlsBroker
) -> None:
    """No fallback to an unverified connection: the bridge keeps trying, never subscribes,
    and says why."""
    bridge = _new_bridge(app, url=tls_broker.url, ca_file=str(tls_broker.other_ca_file))
    stop = asyncio.Event()
    with structlog.testing.capture_logs() as logs:
        task = asyncio.create_task(bridge.run(stop))
        await asyncio.sleep(3)
        assert not bridge.subscribed.is_set()
        assert not task.done()  # still trying, as for a broker that is down
        stop.set()
        async with asyncio.timeout(10):
            await task
    assert any(e["event"] == "mqtt_connect_failed" for e in logs), logs
