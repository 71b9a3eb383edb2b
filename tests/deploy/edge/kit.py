"""Helpers of the edge tests: the API behind the edge, one request at a time, the logs.

The API runs as the deployment must run it behind the edge: `--proxy-headers` with the edge's
address in `--forwarded-allow-ips`, and the same CTAFLEET_HTTP__MAX_BODY_BYTES as the edge
(64 KiB here, so that an oversize body is quick to send).
"""

from __future__ import annotations

import http.client as httpclient
import json
import ssl
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from tests.deploy.live import CTAFLEET, ApiProcess, assert_owns_port, http, wait_for
from tests.kit.edge import CertAuthority, Edge

PASSWORD = "Edge-Test-Password-42!"
ADMIN = "admin@edge.example.org"
MAX_BODY = 65536
BATCH_MAX_BODY = 131072  # the telemetry batch's own limit, larger than every other body
BODY_LIMITS = {
    "CTAFLEET_HTTP__MAX_BODY_BYTES": str(MAX_BODY),
    "CTAFLEET_TELEMETRY__BATCH_MAX_BODY_BYTES": str(BATCH_MAX_BODY),
}


class ProxiedApi(ApiProcess):
    """`ctafleet serve` trusting X-Forwarded-* from the edge (127.0.0.1)."""

    def start(self) -> None:
        self.log_path = self.data_dir / f"serve-{self.port}.log"
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                CTAFLEET,
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--proxy-headers",
                "--forwarded-allow-ips",
                "127.0.0.1",
            ],
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_for(lambda: http("GET", self.url + "/healthz")[0] == 200, 30, f"api on {self.url}")
        assert_owns_port(self.proc, self.log_path)

    def log_lines(self) -> list[dict[str, object]]:
        assert self.log_path is not None
        lines = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                lines.append(json.loads(line))
        return lines


def started_edge(upstream: str, ca: CertAuthority, *, tls: bool = True) -> Edge:
    edge = Edge(upstream, tls=tls, env_extra=dict(BODY_LIMITS))
    _cert, cert_pem, key_pem = ca.issue()
    edge.install_certificate(cert_pem, key_pem)
    edge.start()
    return edge


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def header(self, name: str) -> str | None:
        values = self.all(name)
        assert len(values) <= 1, f"{name} sent {len(values)} times: {values}"
        return values[0] if values else None

    def json(self) -> object:
        return json.loads(self.body)


def fetch(
    base: str,
    path: str,
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    context: ssl.SSLContext | None = None,
    source: str = "127.0.0.1",
) -> Response:
    """One request, no redirects followed, from `source` (any 127.0.0.0/8 address)."""
    url = urlsplit(base)
    assert url.hostname
    assert url.port
    conn: httpclient.HTTPConnection
    if url.scheme == "https":
        conn = httpclient.HTTPSConnection(
            url.hostname, url.port, context=context, timeout=10, source_address=(source, 0)
        )
    else:
        conn = httpclient.HTTPConnection(
            url.hostname, url.port, timeout=10, source_address=(source, 0)
        )
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return Response(response.status, response.getheaders(), response.read())
    finally:
        conn.close()


def login(base: str, context: ssl.SSLContext | None = None) -> str:
    r = fetch(
        base,
        "/api/v1/auth/login",
        method="POST",
        headers={"Content-Type": "application/json"},
        body=json.dumps({"email": ADMIN, "password": PASSWORD}).encode(),
        context=context,
    )
    assert r.status == 200, r.body
    token = r.json()["access_token"]  # type: ignore[index]
    assert isinstance(token, str)
    return token


def edge_log(edge: Edge) -> list[dict[str, object]]:
    """The edge's access log: every line must be one JSON object."""
    return [json.loads(line) for line in edge.stdout().splitlines() if line.strip()]


def logged(edge: Edge, what: str, match: Callable[[dict[str, object]], bool]) -> dict[str, object]:
    """The edge's newest access log line that `match`es (nginx writes it just after the
    answer, so it may lag a moment behind)."""

    def find() -> dict[str, object] | None:
        return next((line for line in reversed(edge_log(edge)) if match(line)), None)

    found: dict[str, object] = wait_for(find, 10, f"the edge's log line of {what}")
    return found


def s_client(
    edge: Edge, *args: str, ca_file: Path | None = None
) -> subprocess.CompletedProcess[str]:
    command = ["openssl", "s_client", "-connect", f"127.0.0.1:{edge.https_port}"]
    command += ["-servername", "edge.ctafleet.test", *args]
    if ca_file is not None:
        command += ["-CAfile", str(ca_file), "-verify_return_error"]
    return subprocess.run(
        command, input="", capture_output=True, text=True, errors="replace", timeout=20, check=False
    )
