"""The `ctafleet worker` process: drains the Redis queue with shard leases shared among the
workers that run, until told to stop (SIGTERM from Kubernetes, Ctrl-C).

Stopping finishes and commits the batch in hand, acknowledges it and gives the leases back, so
another worker takes the shards over at once instead of after the lease time.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from typing import Any

import structlog

from ctafleet.db.engine import Database
from ctafleet.kernel import signals
from ctafleet.kernel.clock import Clock, SystemClock
from ctafleet.telematics.ingest.leases import ShardLeases
from ctafleet.telematics.ingest.runtime import make_queue, stages
from ctafleet.telematics.ingest.worker import Worker

log = structlog.get_logger("ctafleet.worker")


def worker_id() -> str:
    """Unique per process, readable in Redis (`ctafleet:telemetry:lease:*` values)."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def build(settings: Any, *, redis: Any, db: Database, clock: Clock, name: str) -> Worker:
    t = settings.telemetry
    parts = stages(settings, redis)
    return Worker(
        db=db,
        queue=make_queue(settings, redis),
        clock=clock,
        leases=ShardLeases(
            redis,
            shards=t.queue_shards,
            worker_id=name,
            prefix=t.queue_prefix,
            ttl_s=t.lease_ttl_s,
        ),
        batch_entries=t.worker_batch_entries,
        in_batch=parts.in_batch,
        after_commit=parts.after_commit,
        offline_sweep=parts.offline_sweep,
    )


async def serve(
    settings: Any, *, stop: asyncio.Event, clock: Clock | None = None, name: str | None = None
) -> Worker:
    """Run one worker until `stop` is set; the worker (its counters) is returned."""
    import redis.asyncio as aioredis

    if not settings.redis.url:
        raise ValueError("the worker consumes the Redis queue: set CTAFLEET_REDIS__URL")
    redis = aioredis.from_url(settings.redis.url, socket_timeout=5, socket_connect_timeout=2)
    db = Database(settings.database_url, settings)
    name = name or worker_id()
    worker = build(settings, redis=redis, db=db, clock=clock or SystemClock(), name=name)
    log.info("worker_started", worker=name, shards=settings.telemetry.queue_shards)
    try:
        await worker.run(stop)
    finally:
        log.info("worker_stopped", worker=name, batches=worker.batches)
        await db.dispose()
        await redis.aclose()
    return worker


def run_until_signalled(settings: Any) -> None:
    signals.run_until_signalled(lambda stop: serve(settings, stop=stop))
