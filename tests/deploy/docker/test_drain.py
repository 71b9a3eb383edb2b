"""SIGTERM, as Kubernetes and compose send it, loses nothing: the API container finishes the
request in flight and every request it acknowledged reaches the database; the worker container
commits the batch in hand and leaves the rest queued for the next worker (real PostgreSQL and
Redis, containers run hardened)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import urllib.parse
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.deploy.docker.conftest import AppContainers, wait_ready
from tests.kit.podman import PODMAN_TESTS, inspect, podman
from tests.kit.positions import fix_times

pytestmark = PODMAN_TESTS
PASSWORD = "Drain-Check-Horse-42"


async def _wait_stored(owner_url: str, unique_id: str, count: int, within: float = 60) -> None:
    deadline = time.monotonic() + within
    while len(await fix_times(owner_url, unique_id)) < count:
        assert time.monotonic() < deadline, f"fewer than {count} positions stored in {within} s"
        await asyncio.sleep(0.3)


def _device(box: AppContainers, base: str) -> dict[str, Any]:
    """A tenant, its admin (by the image's CLI) and a device (through the API)."""
    slug = f"drain-{uuid.uuid4().hex[:8]}"
    email = f"admin@{slug}.example.org"
    box.run("tenants", "create", slug)
    user = ["--tenant", slug, "--email", email, "--role", "admin"]
    box.run("users", "create", *user, stdin=PASSWORD)
    with httpx.Client(base_url=base, timeout=10) as client:
        r = client.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
        assert r.status_code == 200, r.text
        r = client.post(
            "/api/v1/devices",
            json={"unique_id": f"imei-{uuid.uuid4().hex[:12]}", "name": "T", "protocol": "osmand"},
            headers={"authorization": f"Bearer {r.json()['access_token']}"},
        )
        assert r.status_code == 201, r.text
        return dict(r.json())


class Phones:
    """OsmAnd requests as phones send them, one connection each, until stopped; the fix time
    of every request answered 200, and every other outcome."""

    def __init__(self, base: str, device: dict[str, Any], start: datetime) -> None:
        self.base, self.device, self.start = base, device, start
        self.acked: list[int] = []
        self.errors: list[str] = []
        self.statuses: list[int] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(k,)) for k in range(4)]

    def _run(self, k: int) -> None:
        n = k
        while not self.stop.is_set():
            stamp = int((self.start + timedelta(seconds=n)).timestamp())
            query = urllib.parse.urlencode(
                {"id": self.device["unique_id"], "token": self.device["credential"]}
                | {"lat": "41.88", "lon": "-87.63", "timestamp": str(stamp)}
            )
            try:
                r = httpx.get(f"{self.base}/ingest/osmand?{query}", timeout=10)
                self.statuses.append(r.status_code)
                if r.status_code == 200:
                    self.acked.append(stamp)
            except httpx.TransportError as exc:
                self.errors.append(type(exc).__name__)
                time.sleep(0.05)
            n += len(self.threads)

    def __enter__(self) -> Phones:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(20)


async def test_sigterm_to_the_api_finishes_the_request_in_flight_and_loses_no_point(
    containers: AppContainers, redis_url: str, queue_prefix: str, port: int
) -> None:
    containers.env |= {
        "CTAFLEET_REDIS__URL": redis_url,
        "CTAFLEET_TELEMETRY__QUEUE_PREFIX": queue_prefix,
    }
    owner = containers.env["CTAFLEET_DATABASE__ADMIN_URL"]
    containers.run("db", "upgrade")
    base = f"http://127.0.0.1:{port}"
    api = containers.start("serve", "--host", "127.0.0.1", "--port", str(port))
    wait_ready(base)
    worker = containers.start("worker")
    device = _device(containers, base)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)

    # A request whose body is half sent when SIGTERM arrives (a phone on a slow link).
    slow_stamp = int((start - timedelta(minutes=5)).timestamp())
    body = urllib.parse.urlencode(
        {"id": device["unique_id"], "token": device["credential"]}
        | {"lat": "41.9", "lon": "-87.6", "timestamp": str(slow_stamp)}
    ).encode()
    slow = socket.create_connection(("127.0.0.1", port), timeout=10)
    slow.sendall(
        b"POST /ingest/osmand HTTP/1.1\r\nHost: fleet\r\nConnection: close\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body[:10]
    )
    with Phones(base, device, start) as phones:
        deadline = time.monotonic() + 30
        while len(phones.acked) < 50:
            assert time.monotonic() < deadline, (phones.statuses[-5:], phones.errors[-5:])
            await asyncio.sleep(0.05)
        podman("kill", "--signal", "TERM", api)
        await asyncio.sleep(1.0)
        # The listener is closed at once: a new connection is refused...
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        # ...while the request in flight is still read to its end and answered.
        slow.sendall(body[10:])
        answer = b""
        while chunk := slow.recv(65536):
            answer += chunk
        slow.close()
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    exit_code = podman("wait", api, timeout=60).stdout.strip()
    assert exit_code == "0", f"the API exited {exit_code} (137: killed after the grace period)"

    # Every acknowledged point is stored once, the slow one included; none was refused with 5xx.
    assert not [s for s in phones.statuses if s >= 500], phones.statuses
    acked = {*phones.acked, slow_stamp}
    await _wait_stored(owner, device["unique_id"], len(acked))
    stored = [int(t.timestamp()) for t in await fix_times(owner, device["unique_id"])]
    assert len(stored) == len(set(stored))
    assert acked <= set(stored)
    # Failed attempts are only connections the closed listener refused or reset, never a
    # request cut off after it was taken: each of those would have been counted unanswered.
    assert set(phones.errors) <= {"ConnectError", "ReadError", "RemoteProtocolError"}
    podman("stop", "-t", "30", worker)
    assert inspect(worker, "container")["State"]["ExitCode"] == 0


async def test_sigterm_to_the_worker_commits_its_batch_and_leaves_the_rest_queued(
    containers: AppContainers, redis_url: str, queue_prefix: str, port: int
) -> None:
    containers.env |= {
        "CTAFLEET_REDIS__URL": redis_url,
        "CTAFLEET_TELEMETRY__QUEUE_PREFIX": queue_prefix,
        "CTAFLEET_TELEMETRY__WORKER_BATCH_ENTRIES": "1",  # 40 batches: SIGTERM lands mid-queue
    }
    owner = containers.env["CTAFLEET_DATABASE__ADMIN_URL"]
    containers.run("db", "upgrade")
    base = f"http://127.0.0.1:{port}"
    containers.start("serve", "--host", "127.0.0.1", "--port", str(port))
    wait_ready(base)
    device = _device(containers, base)
    # 10,000 s of one device's track, all of it in the past (a fix in the future is refused).
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=4)
    total = 0
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        for chunk in range(40):
            points = [
                {
                    "time": (start + timedelta(seconds=chunk * 250 + i)).isoformat(),
                    "lat": 41.88 + i * 1e-5,
                    "lon": -87.63,
                }
                for i in range(250)
            ]
            r = await client.post(
                "/api/v1/telemetry",
                json={"points": points},
                headers={"authorization": f"Bearer {device['credential']}"},
            )
            assert r.status_code == 202, r.text
            total += r.json()["accepted"]
    assert total == 10_000

    first = containers.start("worker")
    await _wait_stored(owner, device["unique_id"], 1)
    podman("stop", "-t", "30", first, timeout=60)
    assert inspect(first, "container")["State"]["ExitCode"] == 0
    after_stop = len(await fix_times(owner, device["unique_id"]))
    assert 0 < after_stop < total, "stop the worker in the middle of the queue"

    containers.start("worker")
    await _wait_stored(owner, device["unique_id"], total)
    stored = await fix_times(owner, device["unique_id"])
    assert len(stored) == len(set(stored)) == total
