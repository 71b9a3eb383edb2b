"""Requests through the edge (TLS on) to a real `ctafleet serve`: the API, the OsmAnd ingest,
the live feed's WebSocket with a position pushed through it, what stays unreachable
(/metrics), the body limit, compression, the client's address as the API sees it, and logs
that carry neither query strings nor device credentials."""

from __future__ import annotations

import asyncio
import gzip
import json
import re
import ssl
import time
import uuid
from collections.abc import Iterator

import pytest
import websockets

from tests.deploy.edge.kit import (
    BATCH_MAX_BODY,
    MAX_BODY,
    ProxiedApi,
    Response,
    edge_log,
    fetch,
    logged,
    login,
)
from tests.deploy.live import wait_for
from tests.kit.edge import CertAuthority, Edge
from tests.kit.net import free_port


@pytest.fixture(scope="module")
def token(edge: Edge, tls_context: ssl.SSLContext) -> str:
    return login(edge.https_url, tls_context)


@pytest.fixture(scope="module")
def device(edge: Edge, tls_context: ssl.SSLContext, token: str) -> dict[str, str]:
    r = fetch(
        edge.https_url,
        "/api/v1/devices",
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        body=json.dumps(
            {"unique_id": f"imei-{uuid.uuid4().hex[:12]}", "name": "Edge", "protocol": "osmand"}
        ).encode(),
        context=tls_context,
    )
    assert r.status == 201, r.body
    data = r.json()
    assert isinstance(data, dict)
    return data


def test_health_through_the_edge(edge: Edge, tls_context: ssl.SSLContext) -> None:
    r = fetch(edge.https_url, "/healthz", context=tls_context)
    assert (r.status, r.json()) == (200, {"status": "ok"})
    assert r.header("X-Request-ID"), "answered by the API"
    r = fetch(edge.https_url, "/readyz", context=tls_context)
    assert r.status == 200, r.body


def test_login_and_an_authenticated_request(
    edge: Edge, tls_context: ssl.SSLContext, token: str
) -> None:
    r = fetch(
        edge.https_url,
        "/api/v1/tenant",
        headers={"Authorization": f"Bearer {token}"},
        context=tls_context,
    )
    assert r.status == 200, r.body
    assert r.json()["slug"] == "edge"  # type: ignore[index]


def test_osmand_ingest_reaches_the_api(
    edge: Edge, api: ProxiedApi, tls_context: ssl.SSLContext
) -> None:
    # An unknown device: the API's own answer (401, as Traccar), not the edge's.
    unknown = "/ingest/osmand?id=imei-unknown-1&token=ctd_NotARealCredential0000000&lat=1&lon=2"
    r = fetch(edge.https_url, unknown, context=tls_context)
    direct = fetch(api.url, unknown)
    assert r.status == direct.status == 401
    assert r.header("Content-Type") == "application/problem+json"
    assert r.json()["type"] == direct.json()["type"]  # type: ignore[index]
    # No device id at all: 400.
    r = fetch(edge.https_url, "/ingest/osmand?lat=1&lon=2", context=tls_context)
    assert r.status == 400, r.body
    assert r.json()["type"] == "/problems/osmand-missing-id"  # type: ignore[index]


def test_live_feed_through_the_edge(
    edge: Edge, tls_context: ssl.SSLContext, token: str, device: dict[str, str]
) -> None:
    """The WebSocket upgrade through nginx, then a position sent through the edge (OsmAnd)
    arrives on it."""

    async def scenario() -> dict[str, object]:
        url = f"wss://127.0.0.1:{edge.https_port}/api/v1/live?token={token}"
        async with websockets.connect(url, ssl=tls_context, open_timeout=10) as ws:
            ready = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert ready["type"] == "ready", ready
            stamp = int(time.time() * 1000)
            query = (
                f"/ingest/osmand?id={device['unique_id']}&token={device['credential']}"
                f"&lat=41.9&lon=-87.6&timestamp={stamp}"
            )
            r = await asyncio.to_thread(fetch, edge.https_url, query, context=tls_context)
            assert r.status == 200, r.body
            while True:
                message = json.loads(await asyncio.wait_for(ws.recv(), 15))
                if message["type"] == "position":
                    return dict(message)

    position = asyncio.run(scenario())
    assert position["device_id"] == device["id"]
    assert (position["lat"], position["lon"]) == (41.9, -87.6)
    line = logged(edge, "the upgrade", lambda line: line["path"] == "/api/v1/live")
    assert line["status"] == 101


@pytest.mark.parametrize(
    "path", ["/metrics", "/metrics/", "/metrics?format=text", "//metrics", "/%6Detrics"]
)
def test_metrics_are_not_exposed(
    edge: Edge, plain_edge: Edge, api: ProxiedApi, tls_context: ssl.SSLContext, path: str
) -> None:
    assert b"# HELP" in fetch(api.url, "/metrics").body, "the API does serve them directly"
    for r in (
        fetch(edge.https_url, path, context=tls_context),
        fetch(plain_edge.http_url, path),
    ):
        assert r.status == 404, path
        assert b"# HELP" not in r.body
        assert b"ctafleet_" not in r.body


def test_body_limits_are_the_apis(edge: Edge, tls_context: ssl.SSLContext) -> None:
    """The edge refuses one byte over the API's limits itself (CTAFLEET_HTTP__MAX_BODY_BYTES,
    and CTAFLEET_TELEMETRY__BATCH_MAX_BODY_BYTES for the batch route) and passes a body of
    exactly that size on to the API (which, without a credential, says 401)."""
    headers = {"Content-Type": "application/json"}

    def post(path: str, size: int) -> Response:
        return fetch(
            edge.https_url, path, method="POST", headers=headers, body=b" " * size,
            context=tls_context,
        )  # fmt: skip

    for path, limit in [("/api/v1/vehicles", MAX_BODY), ("/api/v1/telemetry", BATCH_MAX_BODY)]:
        over = post(path, limit + 1)
        assert over.status == 413, path
        assert over.header("X-Request-ID") is None, "refused by nginx, before the API"
        at_limit = post(path, limit)
        assert at_limit.status == 401, (path, at_limit.body)
        assert at_limit.header("X-Request-ID")
    # A batch larger than every other body still reaches the API.
    assert post("/api/v1/telemetry", MAX_BODY + 1).status == 401


def test_json_and_assets_are_compressed(edge: Edge, tls_context: ssl.SSLContext) -> None:
    for path in ("/api/openapi.json", "/static/swagger/swagger-ui.css"):
        r = fetch(edge.https_url, path, headers={"Accept-Encoding": "gzip"}, context=tls_context)
        assert r.status == 200, path
        assert r.header("Content-Encoding") == "gzip", path
        assert r.header("Vary") == "Accept-Encoding"
        plain = gzip.decompress(r.body)
        assert len(plain) > len(r.body)
    assert "paths" in json.loads(gzip.decompress(fetch(
        edge.https_url, "/api/openapi.json", headers={"Accept-Encoding": "gzip"},
        context=tls_context,
    ).body))  # fmt: skip
    # Without Accept-Encoding, the same JSON as is.
    r = fetch(edge.https_url, "/api/openapi.json", context=tls_context)
    assert r.header("Content-Encoding") is None
    assert "paths" in json.loads(r.body)


def test_the_api_sees_the_clients_address(
    edge: Edge, api: ProxiedApi, tls_context: ssl.SSLContext
) -> None:
    """From 127.0.0.2, with a forged X-Forwarded-For: the API logs 127.0.0.2 (what the edge
    saw), under the request id the edge logged."""
    r = fetch(
        edge.https_url,
        "/api/v1/vehicles",
        headers={"X-Forwarded-For": "198.51.100.7", "X-Request-ID": "forged-request-id"},
        context=tls_context,
        source="127.0.0.2",
    )
    assert r.status == 401
    request_id = r.header("X-Request-ID")
    assert request_id
    assert re.fullmatch(r"[0-9a-f]{32}", request_id), "the edge's id, not the client's"

    def api_line() -> dict[str, object] | None:
        for line in api.log_lines():
            if line.get("event") == "request" and line.get("request_id") == request_id:
                return line
        return None

    line = wait_for(api_line, 10, "the API's access log line")
    assert line["client"] == "127.0.0.2"
    edge_line = logged(edge, "the request", lambda e: e["request_id"] == request_id)
    assert edge_line["remote_addr"] == "127.0.0.2"
    assert edge_line["scheme"] == "https"


def test_access_log_is_json_without_secrets(
    edge: Edge, tls_context: ssl.SSLContext, device: dict[str, str]
) -> None:
    credential = device["credential"]
    marker = f"/api/v1/log-probe-{uuid.uuid4().hex}"
    for path in (
        f"/ingest/osmand?id={device['unique_id']}&token={credential}&lat=41.9&lon=-87.6",
        f"/ingest/osmand/{credential}?id={device['unique_id']}&lat=41.9&lon=-87.6",
        f"/ingest/%6Fsmand/{credential}?id={device['unique_id']}&lat=41.9&lon=-87.6",
        f"/api/v1/live?token={credential}",
        marker,
    ):
        fetch(edge.https_url, path, context=tls_context)
    logged(edge, "the last request", lambda line: line["path"] == marker)
    lines = edge_log(edge)
    assert {"time", "request_id", "method", "path", "status", "request_time"} <= set(lines[-1])
    paths = [str(line["path"]) for line in lines]
    assert all("?" not in p for p in paths), paths
    assert paths.count("/ingest/osmand/[redacted]") >= 2
    assert credential not in edge.stdout() + edge.stderr()
    assert credential[:12] not in edge.stdout() + edge.stderr()


@pytest.fixture(scope="module")
def dead_edge(ca: CertAuthority) -> Iterator[Edge]:
    """An edge whose API is not there."""
    edge = Edge(f"127.0.0.1:{free_port()}")
    _cert, cert_pem, key_pem = ca.issue()
    edge.install_certificate(cert_pem, key_pem)
    edge.start()
    yield edge
    edge.remove()


def test_edge_health_without_the_api(dead_edge: Edge, tls_context: ssl.SSLContext) -> None:
    assert fetch(dead_edge.http_url, "/edge/healthz").status == 200
    assert fetch(dead_edge.https_url, "/edge/healthz", context=tls_context).status == 200
    assert fetch(dead_edge.https_url, "/healthz", context=tls_context).status == 502


def test_upstream_failures_do_not_log_the_request_line(
    dead_edge: Edge, tls_context: ssl.SSLContext
) -> None:
    """nginx's error log quotes the request line of a failed request, query string and
    all: at the level the edge logs at, no such message is written."""
    secret = "ctd_" + uuid.uuid4().hex
    r = fetch(
        dead_edge.https_url,
        f"/ingest/osmand?id=imei-1&token={secret}&lat=1&lon=2",
        context=tls_context,
    )
    assert r.status == 502
    assert fetch(dead_edge.https_url, "/api/v1/vehicles", context=tls_context).status == 502
    logged(dead_edge, "the last request", lambda line: line["path"] == "/api/v1/vehicles")
    line = logged(dead_edge, "the ingest request", lambda line: line["path"] == "/ingest/osmand")
    assert (line["status"], line["upstream_status"]) == (502, "502")
    assert secret not in dead_edge.stderr() + dead_edge.stdout()
