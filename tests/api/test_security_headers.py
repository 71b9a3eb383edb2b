"""Security headers on every answer (errors and docs included), CORS, request ids."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import APIRouter

from tests.kit.app import Api, own_app

ORIGIN = "https://fleet.example.org"


def assert_security_headers(r: httpx.Response, *, https: bool) -> None:
    h = r.headers
    where = f"{r.request.method} {r.request.url.path} -> {r.status_code}"
    assert h.get("x-content-type-options") == "nosniff", where
    assert h.get("referrer-policy") == "no-referrer", where
    assert h.get("x-frame-options") == "DENY", where
    csp = h.get("content-security-policy", "")
    assert "frame-ancestors 'none'" in csp, where
    assert "default-src 'self'" in csp, where
    assert "'unsafe-eval'" not in csp, where
    assert "script-src 'self';" in csp, where
    if https:
        hsts = h.get("strict-transport-security", "")
        assert re.fullmatch(r"max-age=(\d+); includeSubDomains", hsts), where
        assert int(hsts.split("=")[1].split(";")[0]) >= 31536000, where
    else:
        assert "strict-transport-security" not in h, where
    assert re.fullmatch(r"[A-Za-z0-9._:-]{8,64}", h.get("x-request-id", "")), where


def _requests(headers: dict[str, str]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        ("GET", "/healthz", {}),
        ("GET", "/", {}),
        ("GET", "/api/docs", {}),
        ("GET", "/api/openapi.json", {}),
        ("GET", "/static/style.css", {}),
        ("GET", "/static/swagger/swagger-ui.css", {}),
        ("GET", "/api/v1/auth/me", {"headers": headers}),
        ("GET", "/api/v1/auth/me", {}),  # 401
        ("GET", "/no/such/page", {}),  # 404
        ("DELETE", "/healthz", {}),  # 405
        ("POST", "/api/v1/auth/login", {"json": {"email": "bad"}}),  # 422
        ("POST", "/api/v1/auth/login", {"content": b"x" * 2_000_000}),  # 413
        ("GET", "/boom", {}),  # 500
    ]


def _add_failing_route(app: Any) -> None:
    router = APIRouter()

    @router.get("/boom")
    async def boom() -> None:
        raise RuntimeError("an unexpected failure")

    app.include_router(router)


@pytest.mark.parametrize("scheme", ["http", "https"])
async def test_security_headers_on_every_kind_of_answer(
    api: Api, tmp_path: Path, scheme: str
) -> None:
    async with own_app(api.backend, tmp_path, base_url=f"{scheme}://testserver") as own:
        _add_failing_route(own.app)
        t = await own.tenant(roles=["viewer"])
        statuses = set()
        for method, url, kwargs in _requests(t.headers("viewer")):
            r = await own.client.request(method, url, **kwargs)
            statuses.add(r.status_code)
            assert_security_headers(r, https=scheme == "https")
            if r.status_code >= 400:
                assert r.headers["content-type"] == "application/problem+json", (url, r.text)
                assert r.json()["request_id"] == r.headers["x-request-id"]
        assert {200, 401, 404, 405, 413, 422, 500} <= statuses
        # API answers are never cached by shared caches; static files may be.
        r = await own.client.get("/api/v1/auth/me", headers=t.headers("viewer"))
        assert r.headers["cache-control"] == "no-store"
        r = await own.client.get("/static/style.css")
        assert r.headers.get("cache-control") != "no-store"


async def test_unhandled_error_is_a_problem_with_the_logged_request_id(
    api: Api, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = logging.getLogger()
    handlers = root.handlers[:]
    try:
        # The app's log handler is bound to the captured stdout from here on.
        async with own_app(api.backend, tmp_path) as own:
            _add_failing_route(own.app)
            r = await own.client.get("/boom", headers={"X-Request-ID": "trace-me-12345"})
    finally:
        root.handlers = handlers
    assert r.status_code == 500
    body = r.json()
    assert body["type"] == "/problems/internal-error"
    assert body["request_id"] == "trace-me-12345" == r.headers["x-request-id"]
    assert "an unexpected failure" not in r.text  # no internals in the answer
    out = capsys.readouterr().out
    logged = [line for line in out.splitlines() if "unhandled_error" in line]
    assert logged, out
    assert "trace-me-12345" in logged[0], out


async def test_debug_mode_lets_the_traceback_through(api: Api, tmp_path: Path) -> None:
    async with own_app(api.backend, tmp_path, debug=True) as own:
        _add_failing_route(own.app)
        with pytest.raises(RuntimeError, match="an unexpected failure"):
            await own.client.get("/boom")


async def test_cors_allows_only_the_configured_origins(api: Api, tmp_path: Path) -> None:
    async with own_app(
        api.backend, tmp_path, http={"cors_origins": [ORIGIN], "cors_allow_credentials": True}
    ) as own:
        r = await own.client.get("/healthz", headers={"Origin": ORIGIN})
        assert r.headers["access-control-allow-origin"] == ORIGIN
        assert r.headers["access-control-allow-credentials"] == "true"
        assert "x-request-id" in r.headers["access-control-expose-headers"].lower()
        r = await own.client.get("/healthz", headers={"Origin": "https://evil.example.com"})
        assert r.status_code == 200
        assert "access-control-allow-origin" not in r.headers

        preflight = {
            "Access-Control-Request-Method": "PATCH",
            "Access-Control-Request-Headers": "authorization, if-match, content-type",
        }
        r = await own.client.options("/api/v1/vehicles", headers={"Origin": ORIGIN, **preflight})
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == ORIGIN
        assert "PATCH" in r.headers["access-control-allow-methods"]
        r = await own.client.options(
            "/api/v1/vehicles", headers={"Origin": "https://evil.example.com", **preflight}
        )
        assert r.status_code >= 400
        assert "access-control-allow-origin" not in r.headers
        # Errors carry CORS too, or a browser client could not read them.
        r = await own.client.get("/api/v1/auth/me", headers={"Origin": ORIGIN})
        assert r.status_code == 401
        assert r.headers["access-control-allow-origin"] == ORIGIN


async def test_no_cors_by_default(api: Api) -> None:
    r = await api.client.get("/healthz", headers={"Origin": ORIGIN})
    assert "access-control-allow-origin" not in r.headers


@pytest.mark.parametrize(
    "incoming",
    [
        "abc",  # too short
        "x" * 65,  # too long
        "has spaces in it",
        "newline\r\nx-injected: 1",
        "<script>alert(1)</script>",
        "ünïcödé-request",
    ],
)
async def test_invalid_request_id_is_replaced(api: Api, incoming: str) -> None:
    r = await api.client.get("/no/such/page", headers=[(b"x-request-id", incoming.encode("utf-8"))])
    rid = r.headers["x-request-id"]
    assert rid != incoming
    assert re.fullmatch(r"[0-9a-f]{32}", rid)
    assert r.json()["request_id"] == rid
    assert "x-injected" not in r.headers


async def test_request_id_echoed_or_generated(api: Api) -> None:
    for incoming in ("req-12345678", "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", "a.b:c_d-" * 7):
        r = await api.client.get("/healthz", headers={"X-Request-ID": incoming})
        assert r.headers["x-request-id"] == incoming
    seen = set()
    for _ in range(3):
        r = await api.client.get("/no/such/page")
        rid = r.headers["x-request-id"]
        assert re.fullmatch(r"[0-9a-f]{32}", rid)
        assert r.json()["request_id"] == rid
        seen.add(rid)
    assert len(seen) == 3


async def test_api_docs_work_offline(api: Api) -> None:
    """Swagger UI asks no outside host (its validator badge would, on any host but
    localhost), keeps the token across reloads, and has an icon."""
    init = (await api.client.get("/static/swagger-init.js")).text
    assert "validatorUrl: null" in init
    assert "persistAuthorization: true" in init
    page = (await api.client.get("/api/docs")).text
    icon = page.split('rel="icon"')[1].split('href="')[1].split('"')[0]
    r = await api.client.get(icon)
    assert r.status_code == 200
    assert r.headers["content-type"] == "image/png"
