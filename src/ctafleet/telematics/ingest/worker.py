"""The worker: drains the telemetry queue into the database in batches.

One loop: renew shard leases, read up to `batch_entries` envelopes from the owned shards (first
the pending ones of shards just taken over, which a dead worker read but never acknowledged),
store them and update what they change in one transaction, then acknowledge. A failed batch is
not acknowledged: it is read again, and the writer's idempotence makes the retry store and
derive nothing twice.

What a batch does beyond its rows is a list of stages (`runtime.stages` builds it):
`InBatch` stages run in the batch's transaction, so what they write commits with the points or
not at all (last positions, derived trips and events); `AfterCommit` stages run once the batch
is committed and acknowledged (the live feed, notifications) and must neither block nor raise:
their failure is logged and the batch stands.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from ctafleet.db.engine import Database
from ctafleet.kernel.clock import Clock
from ctafleet.observability.metrics import (
    INGEST_BATCH_SIZE,
    INGEST_LAG,
    INGEST_QUEUE_DEPTH,
    INGEST_QUEUE_OLDEST,
    INGEST_WRITE,
)
from ctafleet.telematics.ingest import tracking, writer
from ctafleet.telematics.ingest.leases import AllShards, ShardLeases
from ctafleet.telematics.ingest.queue import Delivery, TelemetryQueue
from ctafleet.telematics.ingest.writer import WriteResult

log = structlog.get_logger("ctafleet.worker")

# How often a worker makes sure this month's and the next two months' partitions exist.
PARTITIONS_EVERY_S = 3600.0


class InBatch(Protocol):
    """Runs inside the batch's transaction, after its points are written; raising fails the
    batch (it is read again)."""

    async def __call__(self, session: AsyncSession, result: WriteResult, now: datetime) -> None: ...


class AfterCommit(Protocol):
    """Runs once the batch is committed and acknowledged; must not block the worker."""

    async def __call__(self, result: WriteResult) -> None: ...


class Periodic(Protocol):
    """A job the worker runs every `every_s` between batches, in its own transaction (the
    offline sweep); what it returns goes to the after-commit stages like a batch's result."""

    every_s: float

    async def __call__(self, session: AsyncSession, now: datetime) -> WriteResult: ...


@dataclass
class BatchOutcome:
    entries: int
    points: int
    stored: int


class Worker:
    def __init__(
        self,
        *,
        db: Database,
        queue: TelemetryQueue,
        clock: Clock,
        leases: AllShards | ShardLeases | None = None,
        batch_entries: int = 2000,
        block_s: float = 0.5,
        tick_s: float = 2.0,
        in_batch: Sequence[InBatch] = (tracking.apply,),
        after_commit: Sequence[AfterCommit] = (),
        offline_sweep: Periodic | None = None,
    ) -> None:
        self.db = db
        self.queue = queue
        self.clock = clock
        self.leases = leases or AllShards(queue.shards)
        self.batch_entries = batch_entries
        self.block_s = block_s
        self.tick_s = tick_s
        self._ticked = float("-inf")
        self.batches = 0
        self.in_batch = tuple(in_batch)
        self.after_commit = tuple(after_commit)
        self._partitions_at = float("-inf")
        self.offline_sweep = offline_sweep
        self._swept_at = float("-inf")

    async def _deliveries(self) -> list[Delivery]:
        if self.leases.acquired:
            recovering = sorted(self.leases.acquired)
            pending = await self.queue.read(
                recovering, count=self.batch_entries, block_s=0, pending=True
            )
            if pending:
                return pending
            self.leases.acquired.clear()
        return await self.queue.read(
            sorted(self.leases.owned), count=self.batch_entries, block_s=self.block_s
        )

    async def run_once(self) -> BatchOutcome:
        if time.monotonic() - self._ticked >= self.tick_s:
            await self.leases.tick()
            self._ticked = time.monotonic()
        if time.monotonic() - self._partitions_at >= PARTITIONS_EVERY_S:
            async with self.db.system_session() as session, session.begin():
                await writer.ensure_partitions_ahead(session, self.clock.now())
            self._partitions_at = time.monotonic()
        if (
            self.offline_sweep is not None
            and self.offline_sweep.every_s > 0
            and 0 in self.leases.owned  # one worker sweeps: the one holding shard 0
            and time.monotonic() - self._swept_at >= self.offline_sweep.every_s
        ):
            await self.sweep()
        deliveries = await self._deliveries()
        if not deliveries:
            return BatchOutcome(0, 0, 0)
        envelopes = [d.envelope for d in deliveries]
        started = time.perf_counter()
        now = self.clock.now()
        async with self.db.system_session() as session, session.begin():
            result = await writer.write(session, envelopes)
            for stage in self.in_batch:
                await stage(session, result, now)
        INGEST_WRITE.observe(time.perf_counter() - started)
        await self.queue.ack(deliveries)
        await self._after_commit(result)
        committed = self.clock.now()
        points = sum(len(e.points) for e in envelopes)
        INGEST_BATCH_SIZE.observe(points)
        for env in envelopes:
            INGEST_LAG.observe(max(0.0, (committed - env.received_at).total_seconds()))
        self.batches += 1
        return BatchOutcome(len(deliveries), points, result.stored)

    async def sweep(self) -> WriteResult:
        """The periodic job now (`run_once` calls it when due): committed, then handed to
        the after-commit stages."""
        if self.offline_sweep is None:
            return WriteResult()
        self._swept_at = time.monotonic()
        async with self.db.system_session() as session, session.begin():
            swept = await self.offline_sweep(session, self.clock.now())
        await self._after_commit(swept)
        return swept

    async def _after_commit(self, result: WriteResult) -> None:
        for after in self.after_commit:
            try:
                await after(result)
            except Exception as exc:  # the batch is committed: a side feed never undoes it
                log.warning("after_commit_failed", stage=repr(after), error=type(exc).__name__)

    async def run(self, stop: asyncio.Event) -> None:
        """Until `stop` is set; a failing batch is retried with a growing pause (at most 5 s)."""
        backoff = 0.1
        gauges_at = float("-inf")
        try:
            while not stop.is_set():
                try:
                    await self.run_once()
                    backoff = 0.1
                    if time.monotonic() - gauges_at > 5:
                        await self.refresh_gauges()
                        gauges_at = time.monotonic()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("batch_failed", error=type(exc).__name__, detail=str(exc)[:200])
                    writer.forget_partitions()  # one may have been dropped under us
                    # What was read stays pending: read it again first.
                    self.leases.acquired |= self.leases.owned
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), backoff)
                    backoff = min(backoff * 2, 5.0)
            if not self.queue.durable:
                await self._drain_before_exit()
        finally:
            await self.leases.release_all()

    async def _drain_before_exit(self) -> None:
        """Devices were told their points are safe: an in-process queue is stored to the last
        point before the process goes (the server takes no new requests by then)."""
        try:
            while (await self.run_once()).entries:
                pass
        except Exception as exc:
            log.error(
                "points_lost_at_shutdown",
                queued=await self.queue.depth(),
                error=type(exc).__name__,
                detail=str(exc)[:200],
            )

    async def refresh_gauges(self) -> None:
        INGEST_QUEUE_DEPTH.set(await self.queue.depth())
        INGEST_QUEUE_OLDEST.set(await self.queue.oldest_age_s())
