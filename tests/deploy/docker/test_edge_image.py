"""The edge image run as production runs it (read-only root, UID 10002, no capabilities) in
front of the app image: TLS terminated with a mounted certificate, HSTS on HTTPS, HTTP
redirected, the API reached through it, and its healthcheck unhealthy while nginx is frozen."""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import uuid
from pathlib import Path

import httpx
import pytest

from tests.deploy.docker.conftest import LOCKED_DOWN, AppContainers, wait_ready
from tests.kit.edge import CertAuthority
from tests.kit.net import free_port
from tests.kit.podman import (
    PODMAN_TESTS,
    build_images,
    healthy,
    inspect,
    podman,
    remove,
    wait_healthy,
)
from tests.kit.tools import tool

pytestmark = PODMAN_TESTS


@pytest.fixture(scope="module")
def edge_image() -> str:
    return build_images("edge")["edge"]


def _tls_dir(tmp_path: Path, ca: CertAuthority) -> Path:
    _cert, cert_pem, key_pem = ca.issue(("fleet.test",))
    tls = tmp_path / "tls"
    tls.mkdir()
    (tls / "tls.crt").write_bytes(cert_pem)
    (tls / "tls.key").write_bytes(key_pem)
    for path in (tls, tls / "tls.crt", tls / "tls.key"):
        os.chown(path, 10002, 10002)  # the key is the edge user's alone
    (tls / "tls.key").chmod(0o600)
    return tls


def test_the_edge_image_terminates_tls_in_front_of_the_app_image(
    containers: AppContainers, edge_image: str, tmp_path: Path, port: int
) -> None:
    containers.run("db", "upgrade")
    containers.start("serve", "--host", "127.0.0.1", "--port", str(port))
    wait_ready(f"http://127.0.0.1:{port}")
    ca = CertAuthority()
    http_port, https_port = free_port(), free_port()
    name = f"ctafleet-edge-{uuid.uuid4().hex[:8]}"
    edge = [
        "--user",
        "10002:10002",
        "--tmpfs",
        "/tmp:rw,size=64m,mode=1777",  # noqa: S108 - the container's own tmpfs
        "--tmpfs",
        "/var/cache/nginx:rw,size=16m,U",
        "-v",
        f"{_tls_dir(tmp_path, ca)}:/etc/ctafleet/tls:ro",
        "-e",
        "CTAFLEET_EDGE_TLS=on",
        "-e",
        f"CTAFLEET_EDGE_HTTP_LISTEN=127.0.0.1:{http_port}",
        "-e",
        f"CTAFLEET_EDGE_HTTPS_LISTEN=127.0.0.1:{https_port}",
        "-e",
        f"CTAFLEET_EDGE_PUBLIC_HTTPS_PORT={https_port}",
        "-e",
        f"CTAFLEET_EDGE_UPSTREAM=127.0.0.1:{port}",
        "-e",
        "CTAFLEET_EDGE_WORKERS=1",
        "--health-cmd",
        f'["healthcheck", "{http_port}"]',
    ]
    try:
        podman("run", "-d", "--name", name, *LOCKED_DOWN, *edge, edge_image)
        wait_healthy(name, timeout=30)

        context = ssl.create_default_context(cadata=ca.pem.decode())
        with httpx.Client(verify=context, timeout=10) as client:
            r = client.get(f"https://127.0.0.1:{https_port}/readyz")
            assert r.status_code == 200, r.text
            assert r.json()["status"] == "ready"
            assert r.headers["strict-transport-security"].startswith("max-age=63072000")
            r = client.get(f"http://127.0.0.1:{http_port}/api/v1/vehicles")
            assert r.status_code == 301
            assert r.headers["location"] == f"https://127.0.0.1:{https_port}/api/v1/vehicles"
            assert "strict-transport-security" not in r.headers
        # TLS 1.1 offered (SECLEVEL=0 lets the client try): the refusal is the server's alert.
        offer = ["-connect", f"127.0.0.1:{https_port}", "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"]
        old = subprocess.run(
            [tool("openssl"), "s_client", *offer],
            input="",
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
        assert "alert protocol version" in old.stdout + old.stderr

        assert podman("exec", name, "id", "-u").stdout.strip() == "10002"
        assert "CapEff:\t0000000000000000" in podman("exec", name, "cat", "/proc/1/status").stdout

        # Every nginx process frozen (from the host): the port stays open, nothing answers.
        pids = [int(p) for p in podman("top", name, "hpid").stdout.split()[1:]]
        assert pids, "no nginx process"
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        try:
            assert not healthy(name)
        finally:
            for pid in pids:
                os.kill(pid, signal.SIGCONT)
        wait_healthy(name, timeout=20)
        assert inspect(name, "container")["State"]["Running"]
    finally:
        remove(name)
