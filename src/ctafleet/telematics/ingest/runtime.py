"""The pipeline's parts for one process, built from the settings: the queue, the device
authenticator, the OsmAnd endpoint, the live-feed hub and, without Redis, the in-process
worker."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ctafleet.db.engine import Database
from ctafleet.kernel.clock import Clock
from ctafleet.telematics.derived import DeriveStage
from ctafleet.telematics.ingest import tracking
from ctafleet.telematics.ingest.credentials import DeviceAuthenticator
from ctafleet.telematics.ingest.osmand_http import OsmAndIngest
from ctafleet.telematics.ingest.queue import MemoryQueue, RedisQueue, TelemetryQueue
from ctafleet.telematics.ingest.worker import AfterCommit, InBatch, Worker
from ctafleet.telematics.live import LiveHub, LivePublisher
from ctafleet.telematics.offline import OfflineSweep
from ctafleet.telematics.policy import TenantRules


@dataclass
class Telemetry:
    queue: TelemetryQueue
    auth: DeviceAuthenticator
    osmand: OsmAndIngest
    # The worker that runs inside this process (embedded setup), if any.
    worker: Worker | None
    live: LiveHub


def make_queue(settings: Any, redis: Any) -> TelemetryQueue:
    t = settings.telemetry
    if redis is not None:
        return RedisQueue(
            redis, max_depth=t.queue_max_entries, shards=t.queue_shards, prefix=t.queue_prefix
        )
    return MemoryQueue(max_depth=t.queue_max_entries, shards=t.queue_shards)


def make_live(settings: Any, redis: Any) -> LiveHub:
    t = settings.telemetry
    return LiveHub(redis=redis, prefix=t.queue_prefix, queue_size=t.live_client_queue)


@dataclass
class Stages:
    """What every worker does beyond storing a batch (see `worker`), in order, and its
    periodic offline sweep, which derives with the same rules."""

    in_batch: list[InBatch]
    after_commit: list[AfterCommit]
    offline_sweep: OfflineSweep


def stages(settings: Any, redis: Any, live: LiveHub | None = None) -> Stages:
    """`live`: the hub the batches are published to (this process's own without Redis; with
    Redis, one that publishes to Redis is made)."""
    derive = DeriveStage(rules_for=TenantRules())
    return Stages(
        in_batch=[tracking.apply, derive],
        after_commit=[LivePublisher(live or make_live(settings, redis))],
        offline_sweep=OfflineSweep(derive.rules_for, every_s=settings.telemetry.offline_sweep_s),
    )


def build(settings: Any, db: Database, clock: Clock, redis: Any) -> Telemetry:
    queue = make_queue(settings, redis)
    auth = DeviceAuthenticator(db, clock, ttl_s=settings.telemetry.credential_cache_ttl_s)
    live = make_live(settings, redis)
    worker = None
    if redis is None and settings.telemetry.in_process_worker:
        parts = stages(settings, redis, live)
        worker = Worker(
            db=db,
            queue=queue,
            clock=clock,
            batch_entries=settings.telemetry.worker_batch_entries,
            in_batch=parts.in_batch,
            after_commit=parts.after_commit,
            offline_sweep=parts.offline_sweep,
        )
    return Telemetry(
        queue=queue,
        auth=auth,
        osmand=OsmAndIngest(auth=auth, queue=queue, clock=clock),
        worker=worker,
        live=live,
    )
