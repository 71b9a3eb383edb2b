"""What every request can reach: settings, database, clock, rate limiter, Redis, caches."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from cachetools import TTLCache
from starlette.requests import HTTPConnection

from ctafleet.api.ratelimit import RateLimiter
from ctafleet.config import Settings
from ctafleet.db.engine import Database
from ctafleet.kernel.clock import Clock


def clock_cache(clock: Clock, *, ttl_s: float, maxsize: int) -> TTLCache[Any, Any]:
    """A bounded cache whose entries expire by the injected clock (tests move time)."""
    return TTLCache(maxsize=maxsize, ttl=ttl_s, timer=lambda: clock.now().timestamp())


@dataclass
class AppState:
    settings: Settings
    db: Database
    clock: Clock
    limiter: RateLimiter
    redis: Any = None  # redis.asyncio.Redis when configured
    started_monotonic: float = field(default_factory=time.monotonic)
    # Authenticated sessions seen recently (see auth/deps.py): bounded staleness, per process.
    session_cache: TTLCache[Any, Any] | None = None
    # Access tokens whose signature was verified (their claims' times are checked every time).
    token_cache: TTLCache[Any, Any] | None = None
    # Business gauges the domains registered, refreshed at /metrics (a system session each).
    gauge_refreshers: tuple[Callable[[Any, Any], Awaitable[None]], ...] = ()
    # Identity providers' discovery documents and keys (ctafleet.auth.sso), made at first use.
    oidc: Any = None
    # The telemetry pipeline's parts in this process (ctafleet.telematics.ingest.runtime).
    telemetry: Any = None


# The request's database sessions, closed by EdgeMiddleware once the response is out: a plain
# dependency plus this costs a fraction of a yield dependency's exit-stack machinery.
REQUEST_SESSIONS = "ctafleet.sessions"


def close_with_request(request: HTTPConnection, session: Any) -> None:
    sessions = request.scope.get(REQUEST_SESSIONS)
    if sessions is None:
        raise RuntimeError("a request session needs EdgeMiddleware to close it")
    sessions.append(session)


async def close_request_sessions(scope: Any) -> None:
    for session in scope.pop(REQUEST_SESSIONS, ()):
        await session.close()


def get_state(request: HTTPConnection) -> AppState:
    state: AppState = request.app.state.ctafleet
    return state


def client_ip(request: HTTPConnection) -> str:
    # Behind a proxy, uvicorn's --proxy-headers/--forwarded-allow-ips rewrites request.client.
    return request.client.host if request.client else "unknown"
