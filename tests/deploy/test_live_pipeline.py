"""A real Prometheus scraping the telemetry pipeline as deployed: `ctafleet serve` taking
OsmAnd positions onto the Redis queue and `ctafleet worker` draining it.

The pipeline metrics carry real values (points accepted by the API; batches, write time and
ingest lag in the worker), and stopping the worker fires CTAFleetWorkerDown while positions
wait in the queue; starting it again resolves the alert and drains the queue.
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
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as sync_redis

from tests.deploy.live import (
    CTAFLEET,
    MONITORING,
    ApiProcess,
    Prometheus,
    free_port,
    http,
    wait_for,
)
from tests.deploy.test_live_prometheus import prometheus_binary  # noqa: F401 - a fixture

RULES = sorted((MONITORING / "prometheus" / "rules").glob("*.yml"))
WORKER_DOWN = "CTAFleetWorkerDown"


class Worker:
    def __init__(self, api: ApiProcess) -> None:
        self.api = api
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = (self.api.data_dir / f"worker-{self.port}.log").open("ab")
        self.proc = subprocess.Popen(
            [CTAFLEET, "worker", "--metrics-port", str(self.port)],
            env=self.api.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_for(
            lambda: http("GET", f"http://127.0.0.1:{self.port}/metrics")[0] == 200,
            30,
            "the worker's metrics listener",
        )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            assert self.proc.wait(30) == 0, "the worker did not stop cleanly on SIGTERM"
        self.proc = None


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    prefix = f"test:{uuid.uuid4().hex[:10]}"
    yield prefix
    client = sync_redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(f"{prefix}:*"))
    if keys:
        client.delete(*keys)


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
    prefix: str,
    tmp_path: Path,
) -> None:
    api = ApiProcess(
        tmp_path / "api",
        env_extra={
            "CTAFLEET_REDIS__URL": redis_url,
            "CTAFLEET_TELEMETRY__QUEUE_PREFIX": prefix,
            "CTAFLEET_TELEMETRY__LEASE_TTL_S": "2",
        },
    )
    api.data_dir.mkdir()
    api.cli("demo", "--no-serve", "--vehicles", "3")
    devices = json.loads((api.data_dir / "demo-devices.json").read_text())
    worker = Worker(api)
    api.start()
    worker.start()
    prom = Prometheus(
        tmp_path / "prometheus",
        {
            "ctafleet-api": [f"127.0.0.1:{api.port}"],
            "ctafleet-worker": [f"127.0.0.1:{worker.port}"],
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
        worker.stop()
        api.stop()


def _queue_depth(redis_url: str, prefix: str) -> int:
    client = sync_redis.Redis.from_url(redis_url)
    try:
        return sum(int(client.xlen(key)) for key in client.scan_iter(f"{prefix}:s*"))
    finally:
        client.close()
