"""The telemetry queue between ingest and the worker: at-least-once, ordered per device.

Points are acknowledged to a device once they are in the queue; the worker takes them out only
after their batch is committed. Each device's envelopes go to one of `shards` streams (by a
hash of the device id), and one worker at a time consumes a shard (see worker.py's leases), so
a device's points reach the derived data in the order they arrived, however many workers run.

Two implementations: Redis Streams with a consumer group (`RedisQueue`, several processes and
machines), and `MemoryQueue` for the embedded single-process setup, where the worker runs in
the API process.
"""

from __future__ import annotations

import asyncio
import collections
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ctafleet.telematics.ingest import envelope as wire
from ctafleet.telematics.ingest.envelope import Envelope

DEFAULT_SHARDS = 16
GROUP = "writers"
# One consumer name for the group: a shard is read by whichever worker holds its lease, and
# entries a dead worker read but never acknowledged are then that worker's pending entries.
CONSUMER = "lease-holder"


class QueueFull(Exception):
    """The queue holds more than its configured depth: ingest answers 503 with Retry-After."""

    def __init__(self, depth: int, retry_after_s: int = 5) -> None:
        super().__init__(f"telemetry queue full ({depth} entries waiting)")
        self.depth = depth
        self.retry_after_s = retry_after_s


class QueueUnavailable(Exception):
    """The queue could not take the points (Redis down): ingest answers 503, nothing stored."""


@dataclass(frozen=True, slots=True)
class Delivery:
    shard: int
    entry_id: Any
    envelope: Envelope


def shard_of(device_id: Any, shards: int) -> int:
    return zlib.crc32(device_id.bytes) % shards


class TelemetryQueue(Protocol):
    shards: int
    # False when what is queued dies with the process: its worker stores it all before exit.
    durable: bool

    async def put(self, envelopes: Sequence[Envelope]) -> None: ...

    async def depth(self) -> int: ...

    async def oldest_age_s(self) -> float: ...

    async def read(
        self, shards: Sequence[int], *, count: int, block_s: float, pending: bool = False
    ) -> list[Delivery]: ...

    async def ack(self, deliveries: Sequence[Delivery]) -> None: ...

    async def close(self) -> None: ...


class MemoryQueue:
    """In-process: the API and its worker share it. Unacknowledged deliveries stay pending
    and are read again (`pending=True`) after a failed batch, as with Redis."""

    durable = False

    def __init__(self, *, max_depth: int, shards: int = DEFAULT_SHARDS) -> None:
        self.shards = shards
        self.max_depth = max_depth
        self._ready: list[collections.deque[tuple[int, float, Envelope]]] = [
            collections.deque() for _ in range(shards)
        ]
        self._pending: list[dict[int, tuple[float, Envelope]]] = [{} for _ in range(shards)]
        self._next_id = 0
        self._size = 0
        self._wakeup = asyncio.Event()

    async def put(self, envelopes: Sequence[Envelope]) -> None:
        if self._size >= self.max_depth:
            raise QueueFull(self._size)
        now = time.monotonic()
        for env in envelopes:
            self._next_id += 1
            self._ready[shard_of(env.device_id, self.shards)].append((self._next_id, now, env))
            self._size += 1
        self._wakeup.set()

    async def depth(self) -> int:
        return self._size

    async def oldest_age_s(self) -> float:
        oldest = [q[0][1] for q in self._ready if q]
        oldest += [t for p in self._pending for t, _ in p.values()]
        return time.monotonic() - min(oldest) if oldest else 0.0

    async def read(
        self, shards: Sequence[int], *, count: int, block_s: float, pending: bool = False
    ) -> list[Delivery]:
        if pending:
            return [
                Delivery(s, entry_id, env)
                for s in shards
                for entry_id, (_, env) in sorted(self._pending[s].items())
            ][:count]
        out = self._take(shards, count)
        if not out and block_s > 0:
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), block_s)
            except TimeoutError:
                return []
            out = self._take(shards, count)
        return out

    def _take(self, shards: Sequence[int], count: int) -> list[Delivery]:
        out: list[Delivery] = []
        for s in shards:
            ready, pending = self._ready[s], self._pending[s]
            while ready and len(out) < count:
                entry_id, at, env = ready.popleft()
                pending[entry_id] = (at, env)
                out.append(Delivery(s, entry_id, env))
        return out

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        for d in deliveries:
            if self._pending[d.shard].pop(d.entry_id, None) is not None:
                self._size -= 1

    async def close(self) -> None:
        return None


class RedisQueue:
    """Redis Streams: one stream per shard, one consumer group; entries are deleted once
    acknowledged, so a stream's length is what waits."""

    durable = True

    def __init__(
        self,
        redis: Any,
        *,
        max_depth: int,
        shards: int = DEFAULT_SHARDS,
        prefix: str = "ctafleet:telemetry",
        depth_check_s: float = 0.5,
    ) -> None:
        self.redis = redis
        self.shards = shards
        self.max_depth = max_depth
        self.prefix = prefix
        self.keys = [f"{prefix}:s{n}" for n in range(shards)]
        # The depth is read at most every `depth_check_s`: a round trip per request would cost
        # more than the rest of an OsmAnd request, and the bound need not be exact.
        self._depth_check_s = depth_check_s
        self._depth = 0
        self._depth_at = float("-inf")
        self._groups_ready = False
        self._waiting: list[tuple[Sequence[Envelope], asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def put(self, envelopes: Sequence[Envelope]) -> None:
        from redis.exceptions import RedisError

        try:
            if time.monotonic() - self._depth_at > self._depth_check_s:
                self._depth = await self.depth()
                self._depth_at = time.monotonic()
        except RedisError as exc:
            raise QueueUnavailable(str(exc)) from exc
        if self._depth >= self.max_depth:
            raise QueueFull(self._depth)
        # Puts of concurrent requests share one pipeline (one round trip for all that arrived
        # while the previous one was in flight): a pipeline per request was over a quarter
        # of an OsmAnd request's cost, as profiled. Each put returns once its own entries
        # are in Redis, or raises as before.
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((envelopes, done))
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush())
        await asyncio.shield(done)  # a request that goes away does not cancel the others
        self._depth += len(envelopes)

    async def _flush(self) -> None:
        from redis.exceptions import RedisError

        try:
            while self._waiting:
                taken, self._waiting = self._waiting, []
                try:
                    async with self.redis.pipeline(transaction=False) as pipe:
                        for envelopes, _ in taken:
                            for env in envelopes:
                                key = self.keys[shard_of(env.device_id, self.shards)]
                                pipe.xadd(key, {"e": wire.encode(env)})
                        await pipe.execute()
                except (RedisError, OSError) as exc:
                    # Some entries may be in: a device that retries is stored once anyway.
                    failure = QueueUnavailable(str(exc))
                    for _, done in taken:
                        if not done.done():
                            done.set_exception(failure)
                except BaseException as exc:
                    for _, done in taken:
                        if not done.done():
                            done.set_exception(QueueUnavailable(type(exc).__name__))
                    raise
                else:
                    for _, done in taken:
                        if not done.done():
                            done.set_result(None)
        finally:
            self._flusher = None

    async def depth(self) -> int:
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in self.keys:
                pipe.xlen(key)
            return sum(await pipe.execute())

    async def oldest_age_s(self) -> float:
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in self.keys:
                pipe.xrange(key, count=1)
            firsts = await pipe.execute()
        stamps = [int(entries[0][0].split(b"-")[0]) for entries in firsts if entries]
        if not stamps:
            return 0.0
        server_s, server_us = await self.redis.time()
        return max(0.0, float(server_s) + float(server_us) / 1e6 - min(stamps) / 1000)

    async def ensure_groups(self) -> None:
        from redis.exceptions import ResponseError

        if self._groups_ready:
            return
        for key in self.keys:
            try:
                # From the stream's start: entries queued before any worker ran are kept.
                await self.redis.xgroup_create(key, GROUP, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
        self._groups_ready = True

    async def read(
        self, shards: Sequence[int], *, count: int, block_s: float, pending: bool = False
    ) -> list[Delivery]:
        if not shards:
            if block_s > 0:
                await asyncio.sleep(block_s)
            return []
        await self.ensure_groups()
        streams = {self.keys[s]: ("0" if pending else ">") for s in shards}
        # COUNT bounds each stream, not the answer: share `count` out so a batch stays a batch.
        answer = await self.redis.xreadgroup(
            GROUP,
            CONSUMER,
            streams,
            count=max(1, -(-count // len(shards))),
            block=None if pending or block_s <= 0 else int(block_s * 1000),
        )
        index = {key.encode(): n for n, key in enumerate(self.keys)}
        out = []
        for key, entries in answer or ():
            shard = index[key if isinstance(key, bytes) else key.encode()]
            for entry_id, fields in entries:
                if not fields:  # deleted while pending
                    continue
                out.append(Delivery(shard, entry_id, wire.decode(fields[b"e"])))
        return out

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        by_shard: dict[int, list[Any]] = collections.defaultdict(list)
        for d in deliveries:
            by_shard[d.shard].append(d.entry_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            for shard, ids in by_shard.items():
                pipe.xack(self.keys[shard], GROUP, *ids)
                pipe.xdel(self.keys[shard], *ids)
            await pipe.execute()

    async def close(self) -> None:
        return None
