"""The edge with CTAFLEET_EDGE_TLS=off (Kubernetes: the ingress controller terminates TLS) in
front of a real `ctafleet serve`: plain HTTP on one port, proxied, with no redirect, no ACME
path of its own and no HTTPS listener."""

from __future__ import annotations

import asyncio
import json
import socket

import pytest
import websockets

from tests.deploy.edge.kit import fetch, logged, login
from tests.kit.edge import Edge


def test_the_api_on_plain_http(plain_edge: Edge) -> None:
    r = fetch(plain_edge.http_url, "/healthz")
    assert (r.status, r.json()) == (200, {"status": "ok"})
    assert fetch(plain_edge.http_url, "/edge/healthz").body == b"ok\n"
    assert fetch(plain_edge.http_url, "/api/v1/vehicles").status == 401, "proxied, no redirect"
    # The ACME path is the ingress's (cert-manager's solver): here it is just the API's 404.
    r = fetch(plain_edge.http_url, "/.well-known/acme-challenge/x")
    assert r.status == 404
    assert r.header("X-Request-ID"), "answered by the API"


def test_no_https_listener(plain_edge: Edge) -> None:
    with (
        pytest.raises(ConnectionRefusedError),
        socket.create_connection(("127.0.0.1", plain_edge.https_port), timeout=2),
    ):
        pass


def test_hsts_only_when_the_ingress_says_https(plain_edge: Edge) -> None:
    """The API adds HSTS when told the request came over HTTPS; the edge keeps the ingress's
    X-Forwarded-Proto, so the header appears (once) exactly then."""
    r = fetch(plain_edge.http_url, "/healthz")
    assert r.header("Strict-Transport-Security") is None
    r = fetch(plain_edge.http_url, "/healthz", headers={"X-Forwarded-Proto": "https"})
    assert r.header("Strict-Transport-Security") == "max-age=63072000; includeSubDomains"
    assert r.header("X-Content-Type-Options") == "nosniff"


def test_live_feed_on_plain_http(plain_edge: Edge) -> None:
    token = login(plain_edge.http_url)

    async def ready() -> dict[str, object]:
        url = f"ws://127.0.0.1:{plain_edge.http_port}/api/v1/live"
        # The token as the bearer subprotocol this time (the API answers `bearer`).
        async with websockets.connect(
            url,
            subprotocols=[websockets.Subprotocol("bearer"), websockets.Subprotocol(token)],
            open_timeout=10,
        ) as ws:
            assert ws.subprotocol == "bearer"
            return dict(json.loads(await asyncio.wait_for(ws.recv(), 10)))

    assert asyncio.run(ready())["type"] == "ready"
    assert token not in plain_edge.stdout()
    line = logged(plain_edge, "the upgrade", lambda line: line["path"] == "/api/v1/live")
    assert line["status"] == 101
