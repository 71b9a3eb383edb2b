"""The application image, built from this tree and run as production runs it: read-only root,
numeric non-root user, no capabilities, no privilege escalation, against the real PostgreSQL.

The migration job, a tenant and its admin are made by the image's own CLI; the API it serves
answers /readyz, a login, a device registration and an OsmAnd position that lands in the
database. Its healthcheck program turns unhealthy while the server is frozen."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
import tomllib
import uuid

import httpx

from tests.deploy.docker.conftest import AppContainers, wait_ready
from tests.kit.podman import PODMAN_TESTS, ROOT, healthy, inspect, podman, wait_healthy
from tests.kit.positions import fix_times
from tests.kit.tools import tool

pytestmark = PODMAN_TESTS

PASSWORD = "Container-Check-Horse-42"


async def test_the_image_serves_hardened_against_postgresql(
    containers: AppContainers, port: int
) -> None:
    slug = f"img-{uuid.uuid4().hex[:8]}"
    email = f"admin@{slug}.example.org"
    containers.run("db", "upgrade")
    containers.run("tenants", "create", slug, "--name", "Image check")
    containers.run(
        "users", "create", "--tenant", slug, "--email", email, "--role", "admin", stdin=PASSWORD
    )
    base = f"http://127.0.0.1:{port}"
    name = containers.start(
        "serve", "--host", "127.0.0.1", "--port", str(port), health_url=f"{base}/healthz"
    )
    wait_ready(base)
    wait_healthy(name)

    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        r = await client.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
        assert r.status_code == 200, r.text
        auth = {"authorization": f"Bearer {r.json()['access_token']}"}
        unique_id = f"imei-{uuid.uuid4().hex[:12]}"
        r = await client.post(
            "/api/v1/devices",
            json={"unique_id": unique_id, "name": "Tracker", "protocol": "osmand"},
            headers=auth,
        )
        assert r.status_code == 201, r.text
        credential = r.json()["credential"]
        r = await client.get(
            "/ingest/osmand",
            params={"id": unique_id, "token": credential, "lat": "41.88", "lon": "-87.63"},
        )
        assert r.status_code == 200, r.text
        r = await client.get(
            "/ingest/osmand", params={"id": unique_id, "token": "wrong", "lat": "1", "lon": "2"}
        )
        assert r.status_code == 401

    deadline = time.monotonic() + 20
    while not await fix_times(containers.env["CTAFLEET_DATABASE__ADMIN_URL"], unique_id):
        assert time.monotonic() < deadline, "the OsmAnd position never reached the database"
        await asyncio.sleep(0.2)

    # From inside: the numeric user, no capabilities, no new privileges, nothing writable.
    assert podman("exec", name, "id", "-u").stdout.strip() == "10001"
    status = podman("exec", name, "cat", "/proc/1/status").stdout
    assert "CapEff:\t0000000000000000" in status
    assert "NoNewPrivs:\t1" in status
    denied = podman("exec", name, "touch", "/opt/venv/x", check=False)
    assert denied.returncode != 0
    assert "Read-only file system" in denied.stderr


async def test_the_healthcheck_turns_unhealthy_while_the_app_is_down(
    containers: AppContainers, port: int
) -> None:
    base = f"http://127.0.0.1:{port}"
    name = containers.start(
        "serve", "--host", "127.0.0.1", "--port", str(port), health_url=f"{base}/healthz"
    )
    wait_healthy(name)
    # Freeze the server (from the host: a container's PID 1 ignores signals sent from inside):
    # it still holds its port, but answers nothing, as a deadlocked process would.
    pid = inspect(name, "container")["State"]["Pid"]
    os.kill(pid, signal.SIGSTOP)
    try:
        result = podman("healthcheck", "run", name, check=False, timeout=30)
        assert result.returncode == 1, result
        assert "unhealthy" in result.stdout + result.stderr
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_healthy(name, timeout=20)
    assert healthy(name)


def test_the_image_metadata(app_image: str) -> None:
    image = inspect(app_image)
    config = image["Config"]
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    revision = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    labels = config["Labels"]
    assert labels["org.opencontainers.image.version"] == version
    assert labels["org.opencontainers.image.revision"] == revision
    assert labels["org.opencontainers.image.source"].startswith("https://")
    assert config["User"] == "10001:10001"
    assert config["StopSignal"] in ("SIGTERM", "15")
    assert config["Entrypoint"] == ["ctafleet"]
    assert image["Healthcheck"]["Test"] == ["CMD", "healthcheck", "http://127.0.0.1:8000/healthz"]
    assert config["Cmd"][-1] == "8000", "the healthcheck must probe the port serve listens on"
    size = int(image["Size"])
    print(f"\napp image: {size / 1e6:.0f} MB")


def test_no_tests_secrets_or_build_tools_in_the_image(app_image: str) -> None:
    script = (
        "site=$(echo /opt/venv/lib/python3*/site-packages); "
        "for p in /src /run/secrets/ca $site/tests $site/ctafleet/tests /data/.env; do "
        '[ -e "$p" ] && echo "present: $p"; done; '
        'for t in pip gcc strip; do command -v $t >/dev/null && echo "tool: $t"; done; '
        "find / -xdev \\( -name '*.env' -o -name 'id_rsa' -o -name '*.pem' -path '*ctafleet*' \\) "
        "-print 2>/dev/null; true"
    )
    out = podman("run", "--rm", "--entrypoint", "sh", app_image, "-c", script).stdout
    assert out.strip() == "", out


def test_the_containerfiles_pass_hadolint() -> None:
    hadolint = tool("hadolint")
    files = sorted((ROOT / "deploy" / "docker").rglob("Containerfile"))
    assert len(files) >= 5, files
    result = subprocess.run(
        [hadolint, "--failure-threshold", "info", "--format", "json", *map(str, files)],
        capture_output=True,
        text=True,
        check=False,
    )
    findings = json.loads(result.stdout or "[]")
    assert not findings, findings
    assert result.returncode == 0, result.stderr
