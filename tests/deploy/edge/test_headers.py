"""What the edge tells the API, seen by an upstream that records every request's headers: the
client's address and scheme as the edge saw them (TLS on) or as the ingress said (TLS off),
never what the client forged; one request id; the WebSocket headers on /api/v1/live only; and
the API's own HSTS and nosniff headers replaced by the edge's, so that each is sent once."""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.deploy.edge.kit import Response, fetch, logged, started_edge
from tests.kit.edge import CertAuthority, Edge

UPSTREAM_HSTS = "max-age=1"


class Recorder(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.seen: list[dict[str, list[str]]] = []
        self.lock = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Recorder

    def _answer(self) -> None:
        headers: dict[str, list[str]] = {}
        for name, value in self.headers.items():
            headers.setdefault(name.lower(), []).append(value)
        headers[":path"] = [self.path]
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        with self.server.lock:
            self.server.seen.append(headers)
        body = json.dumps({"ok": True}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        # As the API sends them: the edge must not add a second copy.
        self.send_header("Strict-Transport-Security", UPSTREAM_HSTS)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def recorder() -> Iterator[Recorder]:
    server = Recorder()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def tls_edge(recorder: Recorder, ca: CertAuthority) -> Iterator[Edge]:
    edge = started_edge(f"127.0.0.1:{recorder.server_address[1]}", ca)
    yield edge
    edge.remove()


@pytest.fixture(scope="module")
def ingress_edge(recorder: Recorder, ca: CertAuthority) -> Iterator[Edge]:
    edge = started_edge(f"127.0.0.1:{recorder.server_address[1]}", ca, tls=False)
    yield edge
    edge.remove()


def seen(recorder: Recorder, r: Response) -> dict[str, str]:
    """The headers the upstream got for the request answered by `r` (one value each)."""
    assert r.status == 200, r.body
    with recorder.lock:
        headers = recorder.seen[-1]
    for name, values in headers.items():
        assert len(values) == 1, f"{name} sent {len(values)} times: {values}"
    return {name: values[0] for name, values in headers.items()}


FORGED = {
    "Host": "fleet.example.com",
    "X-Forwarded-For": "198.51.100.7",
    "X-Forwarded-Proto": "http",
    "X-Forwarded-Host": "evil.example",
    "X-Request-ID": "forged-id-1234",
}


def test_tls_edge_states_what_it_saw(
    tls_edge: Edge, recorder: Recorder, tls_context: ssl.SSLContext
) -> None:
    r = fetch(
        tls_edge.https_url, "/api/v1/vehicles?x=1", headers=FORGED, context=tls_context,
        source="127.0.0.2",
    )  # fmt: skip
    got = seen(recorder, r)
    assert got["host"] == "fleet.example.com"
    assert got["x-forwarded-for"] == "127.0.0.2"
    assert got["x-forwarded-proto"] == "https"
    assert got["x-forwarded-host"] == "fleet.example.com"
    assert got[":path"] == "/api/v1/vehicles?x=1"
    request_id = got["x-request-id"]
    assert request_id != FORGED["X-Request-ID"]
    logged(tls_edge, "the request", lambda line: line["request_id"] == request_id)
    # A kept-alive upstream connection; no upgrade outside the live feed.
    assert "connection" not in got
    assert "upgrade" not in got
    assert r.header("Strict-Transport-Security") == "max-age=63072000; includeSubDomains"
    assert r.header("X-Content-Type-Options") == "nosniff"


def test_websocket_headers_only_on_the_live_feed(
    tls_edge: Edge, recorder: Recorder, tls_context: ssl.SSLContext
) -> None:
    upgrade = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13"}
    live = fetch(tls_edge.https_url, "/api/v1/live", headers=upgrade, context=tls_context)
    got = seen(recorder, live)
    assert (got["upgrade"], got["connection"]) == ("websocket", "upgrade")
    other = fetch(tls_edge.https_url, "/api/v1/vehicles", headers=upgrade, context=tls_context)
    got = seen(recorder, other)
    assert "upgrade" not in got
    assert "connection" not in got


@pytest.mark.parametrize(
    ("proto", "expected"), [("https", "https"), (None, "http"), ("gopher", "http")]
)
def test_behind_an_ingress_its_view_is_kept(
    ingress_edge: Edge, recorder: Recorder, proto: str | None, expected: str
) -> None:
    headers = {"Host": "fleet.example.com", "X-Forwarded-For": "198.51.100.7"}
    if proto:
        headers["X-Forwarded-Proto"] = proto
    r = fetch(ingress_edge.http_url, "/api/v1/vehicles", headers=headers, source="127.0.0.2")
    got = seen(recorder, r)
    # The ingress's client first, then the ingress itself; the API trusts both hops.
    assert got["x-forwarded-for"] == "198.51.100.7, 127.0.0.2"
    assert got["x-forwarded-proto"] == expected
    # The ingress sends HSTS itself; the API's passes through, once.
    assert r.header("Strict-Transport-Security") == UPSTREAM_HSTS
    assert r.header("X-Content-Type-Options") == "nosniff"
