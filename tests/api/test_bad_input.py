"""Bad requests are client errors with a problem+json body and a request id, never a 500."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from ctafleet.api.middleware import EdgeMiddleware
from tests.kit.app import Api, TenantUsers
from tests.kit.factories import driver_body, vehicle_body
from tests.kit.problems import PROBLEM_JSON, assert_problem


@pytest.fixture
async def admin(api: Api) -> TenantUsers:
    return await api.tenant(roles=["admin"])


async def test_malformed_json(api: Api, admin: TenantUsers) -> None:
    for url, headers in (
        ("/api/v1/auth/login", {}),
        ("/api/v1/vehicles", admin.headers()),
    ):
        for raw in (b'{"email": ', b"{'a': 1}", b"null", b"[1, 2]", b'"text"', b""):
            r = await api.client.post(
                url, content=raw, headers={**headers, "content-type": "application/json"}
            )
            body = assert_problem(r, 422, "validation-error")
            assert body["errors"], body
        # Bytes that are not text at all: refused as unparseable.
        r = await api.client.post(
            url, content=b"\xff\xfe\x00", headers={**headers, "content-type": "application/json"}
        )
        assert r.status_code in (400, 422), r.text
        assert_problem(r, r.status_code)


async def test_deeply_nested_json_is_a_client_error(api: Api) -> None:
    raw = b"[" * 100_000 + b"]" * 100_000
    r = await api.client.post(
        "/api/v1/auth/login", content=raw, headers={"content-type": "application/json"}
    )
    assert 400 <= r.status_code < 500, r.text
    assert r.headers["content-type"] == PROBLEM_JSON


@pytest.mark.parametrize(
    ("change", "loc"),
    [
        ({"year": "nineteen"}, "year"),  # wrong type
        ({"odometer_m": "far"}, "odometer_m"),
        ({"make": 42}, "make"),
        ({"year": 1800}, "year"),  # out of range
        ({"odometer_m": -1}, "odometer_m"),
        ({"home_lat": 91.0, "home_lon": 0.0}, "home_lat"),
        ({"plate": "<script>"}, "plate"),
        ({"vehicle_type": "spaceship"}, "vehicle_type"),
        ({"bogus_field": 1}, "bogus_field"),  # unknown field
    ],
)
async def test_invalid_vehicle_bodies(
    api: Api, admin: TenantUsers, change: dict[str, Any], loc: str
) -> None:
    r = await api.client.post(
        "/api/v1/vehicles", json=vehicle_body(**change), headers=admin.headers()
    )
    body = assert_problem(r, 422, "validation-error")
    assert any(loc in e["loc"] for e in body["errors"]), body["errors"]


async def test_invalid_queries_paths_and_headers(api: Api, admin: TenantUsers) -> None:
    h = admin.headers()
    r = await api.client.post("/api/v1/vehicles", json=vehicle_body(), headers=h)
    vehicle = r.json()["id"]
    cases: list[tuple[str, str, Any, dict[str, str]]] = [
        ("GET", "/api/v1/vehicles?limit=0", None, {}),
        ("GET", "/api/v1/vehicles?limit=501", None, {}),
        ("GET", "/api/v1/vehicles?limit=ten", None, {}),
        ("GET", "/api/v1/vehicles?status=flying", None, {}),
        ("GET", "/api/v1/vehicles?sort=DROP%20TABLE", None, {}),
        ("GET", "/api/v1/vehicles?format=xml", None, {}),
        ("GET", "/api/v1/vehicles/not-a-uuid", None, {}),
        ("GET", "/api/v1/assignments?active_at=2025-01-01T00:00:00", None, {}),  # naive
        ("PATCH", f"/api/v1/vehicles/{vehicle}", {"year": 2200}, {}),
        ("PATCH", f"/api/v1/vehicles/{vehicle}", {"id": vehicle}, {}),  # read-only field
        ("POST", f"/api/v1/vehicles/{vehicle}/meters", {}, {}),
        ("POST", f"/api/v1/vehicles/{vehicle}/meters", {"odometer_m": 10**20}, {}),
        ("POST", "/api/v1/auth/login", {"email": "not-an-email", "password": "x"}, {}),
        ("POST", "/api/v1/auth/login", {"email": "a@example.org", "password": "x" * 300}, {}),
    ]
    for method, url, body, extra in cases:
        r = await api.client.request(method, url, json=body, headers={**h, **extra})
        assert_problem(r, 422, "validation-error")
    # A malformed cursor or sort field is a 400, and the If-Match of another form a 412.
    r = await api.client.get("/api/v1/vehicles?cursor=%%%%", headers=h)
    assert_problem(r, 400)
    r = await api.client.get("/api/v1/vehicles?sort=nope", headers=h)
    assert_problem(r, 400)
    r = await api.client.patch(
        f"/api/v1/vehicles/{vehicle}", json={"notes": "x"}, headers={**h, "If-Match": "garbage"}
    )
    assert_problem(r, 412)


async def test_password_is_not_echoed_in_validation_errors(api: Api) -> None:
    secret = "Sup3r-Secret-Passphrase"
    r = await api.client.post(
        "/api/v1/auth/login", json={"email": "nobody", "password": secret, "extra": 1}
    )
    assert_problem(r, 422)
    assert secret not in r.text


async def test_oversized_body_with_content_length(api: Api, admin: TenantUsers) -> None:
    limit = api.settings.http.max_body_bytes
    big = b'{"notes": "' + b"x" * limit + b'"}'
    for url, headers in (
        ("/api/v1/auth/login", {}),
        ("/api/v1/vehicles", admin.headers()),
    ):
        r = await api.client.post(
            url, content=big, headers={**headers, "content-type": "application/json"}
        )
        body = assert_problem(r, 413, "payload-too-large")
        assert str(limit) in body["detail"]


async def test_oversized_body_chunked_without_content_length(api: Api) -> None:
    limit = api.settings.http.max_body_bytes
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(limit // 65536 + 4):
            sent += 65536
            yield b"x" * 65536

    request = api.client.build_request(
        "POST",
        "/api/v1/auth/login",
        content=chunks(),
        headers={"content-type": "application/json"},
    )
    assert "content-length" not in request.headers
    assert request.headers["transfer-encoding"] == "chunked"
    r = await api.client.send(request)
    assert_problem(r, 413, "payload-too-large")


async def test_body_longer_than_its_content_length_is_refused() -> None:
    """A client that announces a small body and streams a big one is cut off at the limit."""
    reached = False

    async def app(scope: Any, receive: Any, send: Any) -> None:
        nonlocal reached
        reached = True

    limit = 1024
    middleware = EdgeMiddleware(app, max_body_bytes=limit)
    messages = [
        {"type": "http.request", "body": b"x" * 1000, "more_body": True},
        {"type": "http.request", "body": b"x" * 1000, "more_body": False},
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope: dict[str, Any] = {
        "type": "http",
        "method": "POST",
        "path": "/x",
        "headers": [(b"content-length", b"10")],
        "state": {"request_id": "abcdefgh"},
    }
    await middleware(scope, receive, send)  # type: ignore[arg-type]
    assert not reached
    assert sent[0]["status"] == 413
    assert b"payload-too-large" in sent[1]["body"]


async def test_body_within_limit_reaches_the_route(api: Api) -> None:
    limit = api.settings.http.max_body_bytes
    padding = "x" * (limit - 200)
    r = await api.client.post(
        "/api/v1/auth/login", json={"email": "a@example.org", "password": "p", "pad": padding}
    )
    # Through the size limit, then refused by the schema (unknown field), not by the limit.
    assert_problem(r, 422)


async def test_unknown_route_and_wrong_method(api: Api, admin: TenantUsers) -> None:
    for url in ("/nope", "/api/v1/nope", "/api/v2/vehicles", "/static/nope.css"):
        body = assert_problem(await api.client.get(url), 404, "not-found")
        assert body["instance"] == url
    r = await api.client.delete("/api/v1/vehicles", headers=admin.headers())
    assert_problem(r, 405, "method-not-allowed")
    assert set(r.headers["allow"].replace(" ", "").split(",")) == {"GET", "POST"}
    r = await api.client.put("/api/v1/assignments/00000000-0000-0000-0000-000000000000")
    assert_problem(r, 405, "method-not-allowed")
    assert set(r.headers["allow"].replace(" ", "").split(",")) == {"GET", "PATCH", "DELETE"}
    assert_problem(await api.client.put("/healthz"), 405, "method-not-allowed")


async def test_missing_or_bad_credentials_are_401_problems(api: Api) -> None:
    for headers in (
        {},
        {"Authorization": "Bearer not-a-token"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer " + "a" * 5000},
    ):
        r = await api.client.get("/api/v1/vehicles", headers=headers)
        assert_problem(r, 401, "unauthorized")
        assert r.headers["www-authenticate"] == "Bearer"


async def test_values_the_database_cannot_store_are_client_errors(
    api: Api, admin: TenantUsers
) -> None:
    """NUL characters (PostgreSQL text cannot hold them) and instants outside years 1..9999 UTC."""
    h = admin.headers()
    r = await api.client.post("/api/v1/vehicles", json=vehicle_body(), headers=h)
    vehicle = r.json()["id"]
    r = await api.client.post("/api/v1/drivers", json=driver_body(), headers=h)
    driver = r.json()["id"]
    cases: list[tuple[str, str, Any]] = [
        ("POST", "/api/v1/drivers", driver_body(first_name="Ada\x00")),
        ("PATCH", f"/api/v1/vehicles/{vehicle}", {"notes": "a\x00b"}),
        ("GET", "/api/v1/vehicles?q=U%00", None),
        ("GET", "/api/v1/audit-events?entity_type=%00", None),
        (
            "POST",
            "/api/v1/assignments",
            {"vehicle_id": vehicle, "driver_id": driver, "starts_at": "0001-01-01T00:01:01+01:00"},
        ),
        (
            "POST",
            "/api/v1/assignments",
            {"vehicle_id": vehicle, "driver_id": driver, "starts_at": "9999-12-31T23:59:59-01:00"},
        ),
        ("GET", "/api/v1/assignments?active_at=0001-01-01T00:00:00%2B05:00", None),
        ("GET", "/api/v1/audit-events?since=0001-01-01T00:00:00%2B05:00", None),
        ("GET", "/api/v1/audit-events?until=9999-12-31T23:00:00-05:00", None),
    ]
    for method, url, body in cases:
        r = await api.client.request(method, url, json=body, headers=h)
        assert 400 <= r.status_code < 500, (method, url, r.status_code, r.text)
        assert_problem(r, r.status_code)
    # Nothing half-written.
    r = await api.client.get(f"/api/v1/vehicles/{vehicle}", headers=h)
    assert r.json()["notes"] == ""
    r = await api.client.get("/api/v1/assignments", headers=h)
    assert r.json()["data"] == []


async def test_nul_characters_are_refused_at_the_edge(api: Api, admin: TenantUsers) -> None:
    h = {**admin.headers(), "content-type": "application/json"}
    user = b'{"email": "nul@example.org", "role": "viewer", "password": "x", "full_name": "%s"}'
    for raw, where in (
        (user % b"Ada\\u0000", "body"),
        (user % b"\\\\\\u0000", "body"),  # an escaped backslash, then NUL
        (b'{"email": "a@example.org", "password": "p\\u0000"}', "body"),
    ):
        url = "/api/v1/users" if b"role" in raw else "/api/v1/auth/login"
        r = await api.client.post(url, content=raw, headers=h)
        body = assert_problem(r, 422, "validation-error")
        assert body["errors"][0]["loc"] == [where], body
    for url, where in (
        ("/api/v1/vehicles?make=Ford%00", "query"),
        ("/api/v1/vehicles/abc%00def", "path"),
    ):
        body = assert_problem(await api.client.get(url, headers=h), 422, "validation-error")
        assert body["errors"][0]["loc"] == [where], body
    # The text `\u0000` (an escaped backslash before `u0000`) is not a NUL: it goes through.
    r = await api.client.post(
        "/api/v1/users",
        content=user % b"C:\\\\u0000 dir",
        headers=h,
    )
    assert r.status_code == 422  # refused for the weak password, not for NUL
    assert r.json()["type"] == "/problems/weak-password", r.text


async def test_authentication_comes_before_validation(api: Api, admin: TenantUsers) -> None:
    """A malformed body to a route that needs a login: 401 without one (not a 422 that would
    describe the schema to an anonymous client), 403 for a role that may not, 422 otherwise."""
    viewer = await api.tenant(roles=["viewer"])
    for content in (b'{"unit_number": ', b'{"unit_number": 5}'):
        headers = {"content-type": "application/json"}
        r = await api.client.post("/api/v1/vehicles", content=content, headers=headers)
        assert_problem(r, 401, "unauthorized")
        r = await api.client.post(
            "/api/v1/vehicles", content=content, headers={**headers, **viewer.headers("viewer")}
        )
        assert_problem(r, 403, "forbidden")
        r = await api.client.post(
            "/api/v1/vehicles", content=content, headers={**headers, **admin.headers()}
        )
        assert_problem(r, 422, "validation-error")
    # A public route validates as before.
    r = await api.client.post("/api/v1/auth/login", json={"email": "not-an-email"})
    assert_problem(r, 422, "validation-error")
