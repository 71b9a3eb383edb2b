"""What every request can reach: settings, database, clock, rate limiter, Redis."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request

from ctafleet.api.ratelimit import RateLimiter
from ctafleet.clock import Clock
from ctafleet.config import Settings
from ctafleet.db.engine import Database


@dataclass
class AppState:
    settings: Settings
    db: Database
    clock: Clock
    limiter: RateLimiter
    redis: Any = None  # redis.asyncio.Redis when configured
    started_monotonic: float = field(default_factory=time.monotonic)


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.ctafleet
    return state


def client_ip(request: Request) -> str:
    # Behind a proxy, uvicorn's --proxy-headers/--forwarded-allow-ips rewrites request.client.
    return request.client.host if request.client else "unknown"
