"""Rate limits with the `limits` library: Redis-backed across replicas, in-memory otherwise."""

from __future__ import annotations

import math
import time

import structlog
from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.errors import StorageError

from ctafleet.api.problems import Problem
from ctafleet.observability import metrics

log = structlog.get_logger("ctafleet.ratelimit")
STORE_RETRY_AFTER_S = 5
# The `limit` label of ctafleet_rate_limited_total, by the first identifier of a hit.
METRIC_LABELS = {"auth-ip": "login", "user": "api"}
for _label in (*METRIC_LABELS.values(), "other"):
    # Series exist from the start at 0, so rate() and alerts see the first refusal.
    metrics.RATE_LIMITED.labels(_label)


class RateLimiter:
    def __init__(self, redis_url: str = "", key_prefix: str = "ctafleet-rl") -> None:
        self.backend = "redis" if redis_url else "memory"
        storage: Storage
        if redis_url:
            storage = RedisStorage(
                "async+" + redis_url,
                implementation="redispy",
                key_prefix=key_prefix,
                wrap_exceptions=True,
                socket_timeout=2,
                socket_connect_timeout=2,
            )
        else:
            storage = MemoryStorage()
        self.storage = storage
        self.strategy = SlidingWindowCounterRateLimiter(storage)
        self._parsed: dict[str, RateLimitItem] = {}

    def _item(self, limit: str) -> RateLimitItem:
        item = self._parsed.get(limit)
        if item is None:
            item = self._parsed[limit] = parse(limit)
        return item

    async def hit(self, limit: str, *identifiers: str) -> None:
        """Counts one request; raises a 429 problem with Retry-After when over the limit."""
        item = self._item(limit)
        try:
            if await self.strategy.hit(item, *identifiers):
                return
            stats = await self.strategy.get_window_stats(item, *identifiers)
        except StorageError as exc:
            # Fail closed, but as the temporary outage it is rather than a 500.
            log.error("rate_limit_store_unavailable", error=type(exc.storage_error).__name__)
            raise Problem(
                503,
                "unavailable",
                "the rate-limit store is unreachable; retry shortly",
                headers={"Retry-After": str(STORE_RETRY_AFTER_S)},
            ) from exc
        retry_after = max(1, math.ceil(stats.reset_time - time.time()))
        kind = identifiers[0] if identifiers else ""
        metrics.RATE_LIMITED.labels(METRIC_LABELS.get(kind, "other")).inc()
        raise Problem(
            429,
            "rate-limited",
            f"rate limit of {limit} exceeded; retry after {retry_after} s",
            headers={"Retry-After": str(retry_after)},
        )

    async def reset(self) -> None:
        await self.storage.reset()

    async def check(self) -> bool:
        return bool(await self.storage.check())
