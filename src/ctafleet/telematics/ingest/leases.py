"""Which worker consumes which shard: leases in Redis, shared out evenly among live workers.

A shard is consumed by one worker at a time, which keeps each device's points in order through
the derived data. Each worker announces itself every tick, takes free shards up to its fair
share (shards ÷ live workers, rounded up) and gives back what it holds beyond it, so a second
worker takes half the shards within a tick or two and a dead worker's shards pass on once its
leases expire. A worker that finds it lost a lease drops the shard before its next batch.
"""

from __future__ import annotations

import math
import random
import time
from typing import Any

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""


class AllShards:
    """The single in-process worker owns every shard."""

    def __init__(self, shards: int) -> None:
        self.owned = set(range(shards))
        self.acquired: set[int] = set(range(shards))

    async def tick(self) -> None:
        return None

    async def release_all(self) -> None:
        return None


class ShardLeases:
    def __init__(
        self,
        redis: Any,
        *,
        shards: int,
        worker_id: str,
        prefix: str = "ctafleet:telemetry",
        ttl_s: float = 15.0,
    ) -> None:
        self.redis = redis
        self.shards = shards
        self.worker_id = worker_id
        self.prefix = prefix
        self.ttl_ms = int(ttl_s * 1000)
        self.owned: set[int] = set()
        # Shards taken over since the last batch: their pending entries are read first.
        self.acquired: set[int] = set()
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)

    def _key(self, shard: int) -> str:
        return f"{self.prefix}:lease:{shard}"

    async def live_workers(self) -> int:
        members = f"{self.prefix}:workers"
        now = time.time()
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zadd(members, {self.worker_id: now})
            pipe.zremrangebyscore(members, "-inf", now - self.ttl_ms / 1000)
            pipe.zcard(members)
            *_, count = await pipe.execute()
        return max(1, int(count))

    async def tick(self) -> None:
        for shard in sorted(self.owned):
            if not await self._renew(keys=[self._key(shard)], args=[self.worker_id, self.ttl_ms]):
                self.owned.discard(shard)
        share = math.ceil(self.shards / await self.live_workers())
        for shard in sorted(self.owned, reverse=True)[: max(0, len(self.owned) - share)]:
            await self._release(keys=[self._key(shard)], args=[self.worker_id])
            self.owned.discard(shard)
        free = [s for s in range(self.shards) if s not in self.owned]
        random.shuffle(free)  # workers starting together do not contend for the same shards
        for shard in free:
            if len(self.owned) >= share:
                break
            if await self.redis.set(self._key(shard), self.worker_id, nx=True, px=self.ttl_ms):
                self.owned.add(shard)
                self.acquired.add(shard)

    async def release_all(self) -> None:
        for shard in list(self.owned):
            await self._release(keys=[self._key(shard)], args=[self.worker_id])
        self.owned.clear()
        await self.redis.zrem(f"{self.prefix}:workers", self.worker_id)
