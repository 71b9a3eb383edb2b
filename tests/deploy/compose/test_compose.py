"""deploy/compose.yaml brought up whole with podman-compose, on images built from this tree
(and local stand-ins for PostgreSQL, Redis, Mosquitto, Prometheus and Alertmanager, built from
the same Debian base since no registry is reachable).

podman 4.3 ignores `depends_on` conditions and, without systemd, never runs a healthcheck by
itself: the test starts the services in the file's dependency order and runs each service's
own healthcheck (`podman healthcheck run`) until it passes. Then, through the edge over
HTTPS: the demo tenant's login, its vehicles, and a simulated fleet's positions sent by
`ctafleet simulate` reaching the API; Prometheus scrapes both api replicas.
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pyrage import x25519

from tests.kit.net import free_listen_port
from tests.kit.podman import (
    PODMAN_TESTS,
    ROOT,
    build_images,
    podman,
    podman_env,
    quiet,
    remove,
    wait_healthy,
)
from tests.kit.tools import tool

pytestmark = PODMAN_TESTS
COMPOSE_FILE = ROOT / "deploy" / "compose.yaml"
CTAFLEET = str(Path(sys.executable).with_name("ctafleet"))
# In dependency order, as compose would start them if podman honoured the conditions.
INFRA = ["postgres", "redis", "mosquitto"]
PROCESSES = {"api": 2, "worker": 1, "mqtt-bridge": 1}
FRONT = ["edge", "prometheus", "alertmanager"]


class Stack:
    def __init__(self, tmp: Path) -> None:
        self.project = f"ctafleet-test-{uuid.uuid4().hex[:6]}"
        # Bound a minute later, by containers: outside the range client connections draw from.
        self.http_port, self.https_port = free_listen_port(), free_listen_port()
        self.mqtt_port, self.prometheus_port = free_listen_port(), free_listen_port()
        images = build_images("app", "edge", "postgres", "redis", "mosquitto", "prometheus")
        self.env = {
            **os.environ,
            **podman_env(),
            "CTAFLEET_PUBLIC_URL": f"https://localhost:{self.https_port}",
            "CTAFLEET_APP_IMAGE": images["app"],
            "CTAFLEET_EDGE_IMAGE": images["edge"],
            "POSTGRES_IMAGE": images["postgres"],
            "REDIS_IMAGE": images["redis"],
            "MOSQUITTO_IMAGE": images["mosquitto"],
            "PROMETHEUS_IMAGE": images["prometheus"],
            "ALERTMANAGER_IMAGE": images["prometheus"],
            "CTAFLEET_PUBLISH_ADDRESS": "127.0.0.1",
            "CTAFLEET_HTTP_PORT": str(self.http_port),
            "CTAFLEET_HTTPS_PORT": str(self.https_port),
            "CTAFLEET_MQTT_PORT": str(self.mqtt_port),
            "CTAFLEET_PROMETHEUS_PORT": str(self.prometheus_port),
            "CTAFLEET_SECRETS_DIR": str(tmp / "secrets"),
            "CTAFLEET_TLS_DIR": str(tmp / "tls"),
            "CTAFLEET_ACME_DIR": str(tmp / "acme"),
            "CTAFLEET_BACKUP__AGE_RECIPIENT": str(x25519.Identity.generate().to_public()),
        }
        self.tls = tmp / "tls"

    def compose(self, *args: str, timeout: float = 180) -> str:
        # --in-pod=false: in one pod, podman 4.3 gives the containers the pod's network
        # namespace, which this host's netns="none" default leaves without the project network.
        command = [tool("podman-compose"), "--in-pod=false", "-f", str(COMPOSE_FILE)]
        command += ["-p", self.project, *args]
        result = subprocess.run(
            command, env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        assert result.returncode == 0, (
            f"podman-compose {' '.join(args)} exited {result.returncode}:\n"
            f"{quiet(result.stdout)[-2000:]}\n{quiet(result.stderr)[-3000:]}"
        )
        return result.stdout

    def container(self, service: str, n: int = 1) -> str:
        return f"{self.project}_{service}_{n}"

    def up(self, *services: str) -> None:
        self.compose("up", "-d", "--no-deps", *services)
        for service in services:
            for n in range(1, PROCESSES.get(service, 1) + 1):
                wait_healthy(self.container(service, n), timeout=120)

    def tls_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.tls / "tls.crt"))

    def https(self) -> httpx.Client:
        return httpx.Client(
            base_url=f"https://127.0.0.1:{self.https_port}",
            verify=self.tls_context(),
            timeout=15,
        )


class Phones:
    """OsmAnd requests through the edge from 4 threads until stopped; every outcome kept."""

    def __init__(self, stack: Stack, device: dict[str, Any]) -> None:
        self.stack, self.device = stack, device
        self.ok = 0
        self.failures: list[str] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(k,)) for k in range(4)]

    def _run(self, k: int) -> None:
        stamp = int(time.time()) - 86_400 + k * 10_000  # distinct fixes, all in the past
        with self.stack.https() as client:
            while not self.stop.is_set():
                params = {"id": self.device["unique_id"], "token": self.device["credential"]}
                params |= {"lat": "41.88", "lon": "-87.63", "timestamp": str(stamp)}
                stamp += 1
                try:
                    r = client.get("/ingest/osmand", params=params)
                    if r.status_code == 200:
                        self.ok += 1
                    else:
                        self.failures.append(f"{r.status_code} {r.text[:100]}")
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                time.sleep(0.01)

    def __enter__(self) -> Phones:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    s = Stack(tmp_path)
    result = subprocess.run(
        [str(ROOT / "deploy" / "compose" / "init.sh")],
        env=s.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    try:
        yield s
    finally:
        s.compose("--profile", "jobs", "down", "-v", "-t", "10", timeout=300)
        left = podman("ps", "-a", "--filter", f"name={s.project}", "--format", "{{.Names}}")
        names = left.stdout.split()
        remove(*names)
        assert not names, f"`down` left containers behind: {names}"


# podman 4.3's aardvark-dns reloads its records each time a container joins or leaves the
# network, and a lookup made during a reload can fail ("Name or service not known"). Docker's
# embedded DNS has no such gap. Where a step starts right after containers changed, the test
# waits for names to resolve steadily instead of failing on the engine's gap.
DNS_GAP = ("Name or service not known", "Temporary failure in name resolution", "gaierror")


def _names_resolve(container: str, *names: str) -> None:
    script = "import socket, sys\nfor n in sys.argv[1:]: socket.getaddrinfo(n, None)"
    ok = 0
    deadline = time.monotonic() + 60
    while ok < 5:
        assert time.monotonic() < deadline, f"{names} never resolved steadily in {container}"
        r = podman("exec", container, "python", "-c", script, *names, check=False)
        ok = ok + 1 if r.returncode == 0 else 0
        time.sleep(0.5)


def _until(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except (httpx.HTTPError, KeyError, ValueError) as exc:
            last = exc
        time.sleep(1)
    raise AssertionError(f"{what} not within {timeout} s (last: {last!r})")


def test_the_compose_stack_comes_up_healthy_and_serves_through_the_edge(
    stack: Stack, tmp_path: Path
) -> None:
    stack.up(*INFRA)
    # `up`, not `run`: podman-compose 1.6 leaves a `run` container off the project's network.
    stack.compose("up", "-d", "--no-deps", "migrate")
    migrated = podman("wait", stack.container("migrate"), timeout=240).stdout.strip()
    assert migrated == "0", podman("logs", stack.container("migrate"), check=False).stderr
    stack.up(*PROCESSES)
    stack.up(*FRONT)

    # The demo tenant, seeded by the image's CLI in one api replica.
    api = stack.container("api")
    # Every process that serves or drains, not only the one the demo runs in: a CI run once
    # had the second api replica answer 503 (its Redis unreachable) right after the first
    # replica had resolved every name steadily.
    for service, replicas in PROCESSES.items():
        for n in range(1, replicas + 1):
            _names_resolve(stack.container(service, n), "postgres", "redis", "mosquitto")
    podman("exec", api, "ctafleet", "demo", "--no-serve", "--vehicles", "3", timeout=120)
    users = json.loads(podman("exec", api, "cat", "/data/demo-credentials.json").stdout)
    devices = json.loads(podman("exec", api, "cat", "/data/demo-devices.json").stdout)
    admin = next(u for u in users["users"] if u["role"] == "admin")

    with stack.https() as client:
        r = client.post(
            "/api/v1/auth/login", json={"email": admin["email"], "password": admin["password"]}
        )
        assert r.status_code == 200, r.text
        assert r.headers["strict-transport-security"].startswith("max-age=")
        auth = {"authorization": f"Bearer {r.json()['access_token']}"}
        r = client.get("/api/v1/vehicles", headers=auth)
        assert r.status_code == 200, r.text
        assert len(r.json()["data"]) == 3

        # A simulated fleet, from outside, through the edge's HTTPS port.
        devices_file = tmp_path / "devices.json"
        devices_file.write_text(json.dumps(devices))
        simulate = [CTAFLEET, "simulate", "--url", f"https://127.0.0.1:{stack.https_port}"]
        simulate += ["--devices", str(devices_file), "--rate", "6", "--duration", "6"]
        sim = subprocess.run(
            [*simulate, "--report-every", "0"],
            env={**os.environ, "SSL_CERT_FILE": str(stack.tls / "tls.crt")},
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
        assert sim.returncode == 0, sim.stderr[-2000:]

        def moved() -> int:
            rows = client.get("/api/v1/telemetry/snapshot", headers=auth).json()["data"]
            return len([row for row in rows if row.get("lat") is not None])

        assert _until(moved, 60, "the simulated positions in the fleet snapshot") == 3

    # Plain HTTP is redirected; Prometheus sees both api replicas up.
    r = httpx.get(f"http://127.0.0.1:{stack.http_port}/api/v1/vehicles", timeout=10)
    assert r.status_code == 301
    prometheus = f"http://127.0.0.1:{stack.prometheus_port}"

    def api_targets_up() -> bool:
        q = httpx.get(f"{prometheus}/api/v1/query", params={"query": 'up{job="ctafleet-api"}'})
        values = [float(v["value"][1]) for v in q.json()["data"]["result"]]
        return values == [1.0, 1.0]

    _until(api_targets_up, 60, "both api replicas scraped up")

    # A rolling restart of the api replicas, one at a time, under load through the edge: the
    # stopping replica drains, the edge sends new requests to the other, nothing is refused.
    with Phones(stack, devices[0]) as phones:
        time.sleep(2)
        for n in (1, 2):
            name = stack.container("api", n)
            before = phones.ok
            podman("stop", "-t", "30", name, timeout=60)
            podman("start", name)
            wait_healthy(name, timeout=60)
            _until(lambda b=before: phones.ok > b + 20, 30, f"requests served after {name}")
    assert phones.ok > 100
    assert phones.failures == [], phones.failures[:5]

    # The backup job (profile jobs), as its daily timer runs it: encrypted to the age key.
    backup = stack.container("backup")
    for _attempt in range(3):
        stack.compose("--profile", "jobs", "up", "-d", "--no-deps", "backup")
        code = podman("wait", backup, timeout=240).stdout.strip()
        logs = podman("logs", backup, check=False).stderr
        if code == "0" or not any(gap in logs for gap in DNS_GAP):
            break  # done, or failed for a reason of its own
    assert code == "0", logs[-2000:]
    listing = podman(
        "run", "--rm", "--entrypoint", "sh", "-v", f"{stack.project}_backups:/b:ro",
        stack.env["CTAFLEET_APP_IMAGE"], "-c", "find /b -type f -size +0",
    ).stdout.split()  # fmt: skip
    assert any(name.endswith(".age") for name in listing), listing
