"""Rate limits: per client IP on login, per user on the API; shared across replicas via Redis."""

from __future__ import annotations

import random
import uuid
from pathlib import Path
from typing import Any

import httpx

from ctafleet.observability.metrics import REGISTRY
from tests.kit.app import Api, make_settings, own_app

LOGIN_LIMIT = "5/minute"


def _ip() -> str:
    # Each test its own client address, so counters left in Redis by other runs never apply.
    return f"10.{random.randint(0, 255)}.{random.randint(0, 255)}.{random.randint(1, 254)}"


async def _bad_login(api: Api) -> httpx.Response:
    return await api.client.post(
        "/api/v1/auth/login",
        json={"email": f"nobody-{uuid.uuid4().hex[:8]}@example.org", "password": "wrong"},
    )


def assert_rate_limited(r: httpx.Response, window_s: int = 60) -> None:
    assert r.status_code == 429, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"] == "/problems/rate-limited"
    assert 1 <= int(r.headers["retry-after"]) <= window_s
    # Browsers need to see Retry-After on cross-origin answers too.
    assert r.headers["x-request-id"]


def _settings(redis_url: str | None, **auth: Any) -> dict[str, Any]:
    values: dict[str, Any] = {"auth": {"login_rate_limit": LOGIN_LIMIT, **auth}}
    if redis_url:
        values["redis"] = {"url": redis_url}
    return values


async def test_login_limit_per_ip_with_redis(api: Api, tmp_path: Path, redis_url: str) -> None:
    ip = _ip()
    async with own_app(api.backend, tmp_path, client_ip=ip, **_settings(redis_url)) as own:
        assert own.app.state.ctafleet.limiter.backend == "redis"
        for _ in range(5):
            r = await _bad_login(own)
            assert r.status_code == 401, r.text
        assert_rate_limited(await _bad_login(own))
        # The refresh endpoint shares the login budget of the address.
        r = await own.client.post("/api/v1/auth/refresh", json={"refresh_token": "x" * 20})
        assert_rate_limited(r)
    async with own_app(api.backend, tmp_path, client_ip=_ip(), **_settings(redis_url)) as other:
        r = await _bad_login(other)
        assert r.status_code == 401, "another address has its own budget"


async def test_login_limit_holds_across_replicas(api: Api, tmp_path: Path, redis_url: str) -> None:
    ip = _ip()
    settings = make_settings(api.backend, tmp_path, **_settings(redis_url))
    async with (
        own_app(api.backend, tmp_path, client_ip=ip, settings=settings) as one,
        own_app(api.backend, tmp_path, client_ip=ip, settings=settings) as two,
    ):
        assert one.app is not two.app
        for i in range(5):
            r = await _bad_login(one if i % 2 else two)
            assert r.status_code == 401, r.text
        assert_rate_limited(await _bad_login(one))
        assert_rate_limited(await _bad_login(two))


def _refused(limit: str) -> float:
    return REGISTRY.get_sample_value("ctafleet_rate_limited_total", {"limit": limit}) or 0.0


async def test_login_limit_in_memory_without_redis(api: Api, tmp_path: Path) -> None:
    ip = _ip()
    async with own_app(api.backend, tmp_path, client_ip=ip, **_settings(None)) as own:
        assert own.app.state.ctafleet.limiter.backend == "memory"
        for _ in range(5):
            assert (await _bad_login(own)).status_code == 401
        before = _refused("login")
        assert_rate_limited(await _bad_login(own))
        assert _refused("login") == before + 1


async def test_api_limit_per_user_across_replicas(api: Api, tmp_path: Path, redis_url: str) -> None:
    settings = make_settings(
        api.backend, tmp_path, **_settings(redis_url, api_rate_limit="4/minute")
    )
    async with (
        own_app(api.backend, tmp_path, client_ip=_ip(), settings=settings) as one,
        own_app(api.backend, tmp_path, client_ip=_ip(), settings=settings) as two,
    ):
        t = await one.tenant(roles=["viewer", "auditor"])
        for client in (one, two, one, two):
            r = await client.client.get("/api/v1/auth/me", headers=t.headers("viewer"))
            assert r.status_code == 200, r.text
        r = await two.client.get("/api/v1/vehicles", headers=t.headers("viewer"))
        assert_rate_limited(r)
        # Another user of the same tenant, from the same address, is not affected.
        r = await one.client.get("/api/v1/auth/me", headers=t.headers("auditor"))
        assert r.status_code == 200, r.text


async def test_api_limit_per_user_in_memory(api: Api, tmp_path: Path) -> None:
    settings = _settings(None, api_rate_limit="3/minute")
    async with own_app(api.backend, tmp_path, client_ip=_ip(), **settings) as own:
        t = await own.tenant(roles=["viewer"])
        for _ in range(3):
            r = await own.client.get("/api/v1/auth/me", headers=t.headers("viewer"))
            assert r.status_code == 200, r.text
        before = _refused("api")
        assert_rate_limited(await own.client.get("/api/v1/auth/me", headers=t.headers("viewer")))
        assert _refused("api") == before + 1


async def test_unreachable_redis_is_a_503_not_a_500(api: Api, tmp_path: Path) -> None:
    # Port 1 on loopback: nothing listens, the connection is refused at once.
    async with own_app(
        api.backend, tmp_path, client_ip=_ip(), **_settings("redis://127.0.0.1:1/0")
    ) as own:
        r = await _bad_login(own)
        assert r.status_code == 503, r.text
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["type"] == "/problems/unavailable"
        assert int(r.headers["retry-after"]) >= 1
