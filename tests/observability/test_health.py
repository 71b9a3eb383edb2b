"""Liveness needs nothing; readiness needs the database at head (and Redis when configured)."""

from __future__ import annotations

from pathlib import Path

from ctafleet import __version__
from ctafleet.db.migrate import head_revision
from tests.kit.app import Api, Backend, own_app

# Nothing listens on port 1 of loopback: connections are refused at once.
DEAD_PG = "postgresql+asyncpg://nobody@127.0.0.1:1/nothing"
DEAD_REDIS = "redis://127.0.0.1:1/0"


async def test_healthz_does_not_touch_the_database(tmp_path: Path) -> None:
    dead = Backend("postgres", DEAD_PG, DEAD_PG)
    async with own_app(dead, tmp_path) as own:
        r = await own.client.get("/healthz")
        assert r.status_code == 200
        assert r.json() == {"status": "ok"}
        assert own.app.state.ctafleet.db.engine.pool.checkedin() == 0
        r = await own.client.get("/readyz")
        assert r.status_code == 503
        assert r.json() == {"status": "not_ready", "checks": {"database": "error"}}
        r = await own.client.get("/api/health")
        assert r.status_code == 503
        assert r.json()["dependencies"]["database"]["status"] == "error"


async def test_ready_when_migrated(api: Api) -> None:
    r = await api.client.get("/readyz")
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "ready", "checks": {"database": "ok"}}


async def test_not_ready_when_the_database_is_behind_head(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
    async with own_app(Backend("sqlite", url, url), tmp_path) as own:
        assert (await own.client.get("/healthz")).status_code == 200
        r = await own.client.get("/readyz")
        assert r.status_code == 503
        assert r.json()["checks"]["database"] == "error"
        r = await own.client.get("/api/health")
        assert r.status_code == 503
        body = r.json()
        assert body["status"] == "degraded"
        assert body["dependencies"]["database"]["status"] == "error"


async def test_health_report(api: Api) -> None:
    r = await api.client.get("/api/health")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "ok"
    assert body["version"] == __version__
    assert body["environment"] == "test"
    assert isinstance(body["uptime_s"], int | float)
    assert body["uptime_s"] >= 0
    db = body["dependencies"]["database"]
    assert db["status"] == "ok"
    assert db["backend"] == ("sqlite" if api.backend.name == "sqlite" else "postgresql")
    assert db["revision"] == head_revision()
    assert 0 <= db["latency_ms"] < 2000
    assert "redis" not in body["dependencies"]
    # Never cached: a proxy must not answer health checks from a stale copy.
    assert r.headers["cache-control"] == "no-store"


async def test_health_report_includes_redis(api: Api, tmp_path: Path, redis_url: str) -> None:
    async with own_app(api.backend, tmp_path, redis={"url": redis_url}) as own:
        r = await own.client.get("/api/health")
        assert r.status_code == 200, r.text
        redis = r.json()["dependencies"]["redis"]
        assert redis["status"] == "ok"
        assert 0 <= redis["latency_ms"] < 2000
        r = await own.client.get("/readyz")
        assert r.json() == {"status": "ready", "checks": {"database": "ok", "redis": "ok"}}


async def test_unreachable_redis_makes_the_service_not_ready(api: Api, tmp_path: Path) -> None:
    async with own_app(api.backend, tmp_path, redis={"url": DEAD_REDIS}) as own:
        assert (await own.client.get("/healthz")).status_code == 200
        r = await own.client.get("/readyz")
        assert r.status_code == 503
        assert r.json()["checks"] == {"database": "ok", "redis": "error"}
        r = await own.client.get("/api/health")
        assert r.status_code == 503
        body = r.json()
        assert body["dependencies"]["redis"]["status"] == "error"
        assert body["dependencies"]["redis"]["error"]  # the kind of failure, for the operator
        assert body["dependencies"]["database"]["status"] == "ok"
