"""`/metrics`: this process's Prometheus exposition, with business gauges refreshed at scrape."""

from __future__ import annotations

import asyncio
import secrets
import time

import structlog
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from ctafleet.api.problems import Problem
from ctafleet.api.state import AppState
from ctafleet.auth.deps import PublicCtx, public
from ctafleet.observability import metrics

router = APIRouter(include_in_schema=False)
log = structlog.get_logger("ctafleet.metrics")

BUSINESS_TTL_S = 15.0  # business gauges cost a few COUNTs: at most once per 15 s per process
_last_refresh = 0.0
_lock = asyncio.Lock()


async def refresh_business_gauges(state: AppState) -> None:
    """Runs every domain's gauge refresher (registered by the app, see ctafleet.domains)."""
    now = state.clock.now()
    async with state.db.system_session() as session:
        for refresh in state.gauge_refreshers:
            await refresh(session, now)


def _pool_gauges(state: AppState) -> None:
    pool = state.db.engine.sync_engine.pool
    checked_out = getattr(pool, "checkedout", None)
    overflow = getattr(pool, "overflow", None)
    if callable(checked_out):
        metrics.DB_POOL_IN_USE.set(checked_out())
    if callable(overflow):
        metrics.DB_POOL_OVERFLOW.set(max(0, overflow()))


async def _redis_roundtrip(state: AppState) -> None:
    if state.redis is None:
        return
    started = time.perf_counter()
    try:
        await asyncio.wait_for(state.redis.ping(), 1.0)
    except Exception:
        log.warning("redis_ping_failed")
        return
    metrics.REDIS_ROUNDTRIP.observe(time.perf_counter() - started)


@router.get("/metrics")
async def metrics_endpoint(request: Request, ctx: PublicCtx = Depends(public())) -> Response:
    token = ctx.state.settings.observability.metrics_token.get_secret_value()
    if token:
        supplied = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not secrets.compare_digest(supplied.encode(), token.encode()):
            raise Problem(
                401,
                "unauthorized",
                "the metrics endpoint needs its bearer token",
                headers={"WWW-Authenticate": "Bearer"},
            )
    global _last_refresh
    async with _lock:
        if time.monotonic() - _last_refresh > BUSINESS_TTL_S:
            try:
                await refresh_business_gauges(ctx.state)
                _last_refresh = time.monotonic()
            except Exception:
                log.warning("business_gauges_failed", exc_info=True)
    _pool_gauges(ctx.state)
    await _redis_roundtrip(ctx.state)
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)
