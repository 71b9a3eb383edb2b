"""A real Prometheus scraping the telemetry pipeline as deployed: `ctafleet serve` taking
OsmAnd positions onto the Redis queue, `ctafleet mqtt` taking them from Mosquitto, and
`ctafleet worker` draining the queue.

The pipeline metrics carry real values (points accepted by the API and by the bridge;
batches, write time and ingest lag in the worker). Stopping the worker fires
CTAFleetWorkerDown while positions wait in the queue, and starting it again resolves the
alert and drains the queue; stopping the bridge fires CTAFleetMQTTBridgeDown.
"""

from __future__ import annotations

import contextlib
import functools
import json
import subprocess
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
import redis as sync_redis

from tests.deploy.live import CTAFLEET, MONITORING, ApiProcess, Prometheus, http, wait_for
from tests.deploy.test_live_prometheus import prometheus_binary  # noqa: F401 - a fixture
from tests.kit.net import free_port

RULES = sorted((MONITORING / "prometheus" / "rules").glob("*.yml"))
WORKER_DOWN = "CTAFleetWorkerDown"
BRIDGE_DOWN = "CTAFleetMQTTBridgeDown"


class Worker:
    """`ctafleet worker` (or another pipeline command) with its metrics listener."""

    def __init__(self, api: ApiProcess, command: str = "worker") -> None:
        self.api = api
        self.command = command
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = (self.api.data_dir / f"{self.command}-{self.port}.log").open("ab")
        self.proc = subprocess.Popen(
            [CTAFLEET, self.command, "--metrics-port", str(self.port)],
            env=self.api.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_for(
            lambda: http("GET", f"http://127.0.0.1:{self.port}/metrics")[0] == 200,
            30,
            f"the {self.command}'s metrics listener",
        )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            assert self.proc.wait(30) == 0, f"{self.command} did not stop cleanly on SIGTERM"
        self.proc = None


class Devices:
    """Sends an OsmAnd fix for every demo device every 100 ms until stopped."""

    def __init__(self, api: ApiProcess, devices: list[dict[str, str]]) -> None:
        self.api = api
        self.devices = devices
        self.stop = threading.Event()
        self.sent = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        n = 0
        while not self.stop.is_set():
            for d in self.devices:
                query = (
                    f"id={d['unique_id']}&token={d['credential']}&lat=41.9&lon=-87.6"
                    f"&timestamp={int(time.time() * 1000) - 1000 + n}"
                )
                # As a phone sends it: no content type (JSON would name the body's form).
                url = f"{self.api.url}/ingest/osmand?{query}"
                with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=5) as r:
                    self.sent += r.status == 200
            n += 1
            self.stop.wait(0.1)

    def __enter__(self) -> Devices:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(10)


@pytest.mark.slow
def test_the_pipeline_under_a_real_prometheus(
    prometheus_binary: str,  # noqa: F811 - the fixture imported above
    redis_url: str,
    mqtt_url: str,
    queue_prefix: str,
    tmp_path: Path,
) -> None:
    prefix = queue_prefix
    api = ApiProcess(
        tmp_path / "api",
        env_extra={
            "CTAFLEET_REDIS__URL": redis_url,
            "CTAFLEET_TELEMETRY__QUEUE_PREFIX": prefix,
            "CTAFLEET_TELEMETRY__LEASE_TTL_S": "2",
            "CTAFLEET_MQTT__URL": mqtt_url,
            "CTAFLEET_MQTT__TOPIC_PREFIX": f"test/{prefix}",
            "CTAFLEET_MQTT__CLIENT_ID": f"bridge-{uuid.uuid4().hex[:8]}",
        },
    )
    api.data_dir.mkdir()
    api.cli("demo", "--no-serve", "--vehicles", "3")
    devices = json.loads((api.data_dir / "demo-devices.json").read_text())
    worker = Worker(api)
    bridge = Worker(api, "mqtt")
    api.start()
    worker.start()
    bridge.start()
    prom = Prometheus(
        tmp_path / "prometheus",
        {
            "ctafleet-api": [f"127.0.0.1:{api.port}"],
            "ctafleet-worker": [f"127.0.0.1:{worker.port}"],
            "ctafleet-mqtt": [f"127.0.0.1:{bridge.port}"],
        },
        RULES,
    )
    prom.start()
    try:
        with Devices(api, devices) as sending:
            for expr, what in [
                (
                    'sum(ctafleet_ingest_points_total{job="ctafleet-api",protocol="osmand",'
                    'outcome="accepted"}) > 0',
                    "points accepted by the API",
                ),
                ('sum(ctafleet_ingest_batch_size_count{job="ctafleet-worker"}) > 0', "batches"),
                (
                    'sum(ctafleet_ingest_write_duration_seconds_count{job="ctafleet-worker"}) > 0',
                    "write times",
                ),
                ('sum(ctafleet_ingest_lag_seconds_count{job="ctafleet-worker"}) > 0', "lag"),
                ('up{job="ctafleet-worker"} == 1', "the worker scraped"),
            ]:
                wait_for(functools.partial(prom.has_data, expr), 30, what)
            # (Before the first scrape the target is absent: the alert may have fired.)
            wait_for(lambda: prom.alert_state(WORKER_DOWN) is None, 20, "the worker seen up")

            # A device over MQTT: its points counted by the bridge's own metrics.
            _publish(mqtt_url, f"test/{prefix}/{devices[0]['unique_id']}", devices[0])
            for expr, what in [
                ('sum(ctafleet_mqtt_messages_total{outcome="accepted"}) > 0', "a message taken"),
                (
                    'sum(ctafleet_ingest_points_total{job="ctafleet-mqtt",protocol="mqtt",'
                    'outcome="accepted"}) > 0',
                    "points accepted by the bridge",
                ),
                ('ctafleet_mqtt_connected{job="ctafleet-mqtt"} == 1', "the bridge connected"),
            ]:
                wait_for(functools.partial(prom.has_data, expr), 30, what)
            wait_for(lambda: prom.alert_state(BRIDGE_DOWN) is None, 20, "the bridge seen up")
            bridge.stop()
            wait_for(lambda: prom.alert_state(BRIDGE_DOWN) == "firing", 40, BRIDGE_DOWN)

            # The worker stops: devices are still acknowledged, the queue fills, the alert fires.
            worker.stop()
            wait_for(lambda: prom.alert_state(WORKER_DOWN) == "firing", 40, f"{WORKER_DOWN}")
            before = sending.sent
            wait_for(lambda: sending.sent > before + 10, 10, "devices acknowledged meanwhile")
            wait_for(lambda: _queue_depth(redis_url, prefix) > 0, 20, "positions waiting")

            worker.start()
            wait_for(lambda: prom.alert_state(WORKER_DOWN) is None, 40, f"{WORKER_DOWN} resolved")
        wait_for(lambda: _queue_depth(redis_url, prefix) == 0, 30, "the queue drained")
        wait_for(
            lambda: prom.has_data('max(ctafleet_ingest_queue_depth{job="ctafleet-worker"}) == 0'),
            30,
            "the depth gauge back at zero",
        )
    finally:
        prom.stop()
        bridge.stop()
        worker.stop()
        api.stop()


def _publish(mqtt_url: str, topic: str, device: dict[str, str]) -> None:
    """One message at QoS 1, as the topic scheme says (docs/telemetry.md)."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from ctafleet.telematics.mqtt_url import parse_broker_url

    target = parse_broker_url(mqtt_url)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect(target.host, target.port)
    client.loop_start()
    payload = {
        "device": device["unique_id"],
        "credential": device["credential"],
        "points": [{"time": int(time.time()) - 5, "lat": 41.9, "lon": -87.6}],
    }
    client.publish(topic, json.dumps(payload), qos=1).wait_for_publish(10)
    client.loop_stop()
    client.disconnect()


def _queue_depth(redis_url: str, prefix: str) -> int:
    client = sync_redis.Redis.from_url(redis_url)
    try:
        return sum(int(client.xlen(key)) for key in client.scan_iter(f"{prefix}:s*"))
    finally:
        client.close()
