"""Liveness, readiness and the detailed health report."""

from __future__ import annotations

import asyncio
import functools
import time
from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import text

from ctafleet import __version__
from ctafleet.api.state import AppState, get_state
from ctafleet.auth.deps import PublicCtx, public, public_endpoint

router = APIRouter(tags=["health"])
CHECK_TIMEOUT_S = 2.0
LIVE = b'{"status":"ok"}'


class Liveness(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready", "not_ready"]
    checks: dict[str, Literal["ok", "error"]]


class DependencyHealth(BaseModel):
    model_config = ConfigDict(extra="allow")  # backend details: revision, backend name

    status: Literal["ok", "error"]
    latency_ms: float
    error: str | None = Field(None, description="The kind of failure (an exception name).")


class HealthReport(BaseModel):
    status: Literal["ok", "degraded"]
    version: str
    environment: str
    uptime_s: float
    dependencies: dict[str, DependencyHealth]


async def _timed(coro: Any) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        detail = await asyncio.wait_for(coro, CHECK_TIMEOUT_S)
        result: dict[str, Any] = {"status": "ok"}
        if isinstance(detail, dict):
            result.update(detail)
    except Exception as exc:
        result = {"status": "error", "error": type(exc).__name__}
    result["latency_ms"] = round((time.perf_counter() - started) * 1000, 2)
    return result


@functools.cache
def _head() -> str | None:
    # Alembic is imported on the first readiness check, not at start-up, and the code's head
    # revision does not change while the process runs.
    from ctafleet.db.migrate import head_revision

    return head_revision()


async def _database(state: AppState) -> dict[str, Any]:
    async with state.db.engine.connect() as conn:  # also the liveness of the database
        current = await conn.scalar(text("SELECT version_num FROM alembic_version"))
    head = _head()
    if current != head:
        raise RuntimeError("migrations not at head")
    return {"backend": state.db.dialect, "revision": current}


async def _redis(state: AppState) -> dict[str, Any]:
    await state.redis.ping()
    return {}


async def checks(state: AppState) -> dict[str, dict[str, Any]]:
    results = {"database": _timed(_database(state))}
    if state.redis is not None:
        results["redis"] = _timed(_redis(state))
    done = await asyncio.gather(*results.values())
    return dict(zip(results, done, strict=True))


@router.get(
    "/healthz",
    response_model=Liveness,
    summary="Liveness: the process answers (no dependencies)",
)
@public_endpoint
async def healthz() -> Response:
    return Response(LIVE, media_type="application/json")


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "A dependency is not ready"}},
    summary="Readiness: database (migrations at head) and Redis reachable",
)
@public_endpoint
async def readyz(request: Request) -> JSONResponse:
    results = await checks(get_state(request))
    ready = all(r["status"] == "ok" for r in results.values())
    return JSONResponse(
        {
            "status": "ready" if ready else "not_ready",
            "checks": {k: v["status"] for k, v in results.items()},
        },
        status_code=200 if ready else 503,
    )


@router.get(
    "/api/health",
    response_model=HealthReport,
    responses={503: {"model": HealthReport, "description": "A dependency failed its check"}},
    summary="Version, uptime and each dependency's status and latency",
)
async def health(ctx: PublicCtx = Depends(public())) -> JSONResponse:
    results = await checks(ctx.state)
    ok = all(r["status"] == "ok" for r in results.values())
    return JSONResponse(
        {
            "status": "ok" if ok else "degraded",
            "version": __version__,
            "environment": ctx.state.settings.environment.value,
            "uptime_s": round(time.monotonic() - ctx.state.started_monotonic, 1),
            "dependencies": results,
        },
        status_code=200 if ok else 503,
    )
