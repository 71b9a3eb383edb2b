"""Workers on the Redis queue (real PostgreSQL and Redis): two share the shards and store what
one would; a worker killed in the middle of a batch loses nothing and its successor stores
nothing twice; SIGTERM finishes the batch and gives the shards back."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import func, select

from ctafleet.db.migrate import upgrade
from ctafleet.telematics.ingest import process
from ctafleet.telematics.ingest.envelope import Envelope
from ctafleet.telematics.ingest.queue import GROUP
from ctafleet.telematics.models import LastPosition, Position
from ctafleet.telematics.points import Point
from tests.kit.app import Api, Backend, TenantUsers, own_app
from tests.telematics.ingest.kit import device

pytestmark = pytest.mark.asyncio
SHARDS = 8


@pytest.fixture(scope="module")
def pg_backend(fresh_pg: Any) -> Backend:
    pg = fresh_pg()
    asyncio.run(upgrade(pg.owner_url, app_role=pg.app_role))
    return Backend("postgres", pg.app_url, pg.owner_url, pg)


@pytest.fixture
def prefix(queue_prefix: str) -> str:
    return queue_prefix


@pytest_asyncio.fixture
async def app(
    pg_backend: Backend, redis_url: str, prefix: str, tmp_path: Path
) -> AsyncIterator[Api]:
    telemetry = {"queue_prefix": prefix, "queue_shards": SHARDS, "lease_ttl_s": 2}
    async with own_app(pg_backend, tmp_path, redis={"url": redis_url}, telemetry=telemetry) as api:
        yield api


def _envelopes(
    tenant: TenantUsers, devices: list[dict[str, Any]], per_device: int, chunk: int
) -> list[Envelope]:
    """Each device's track in chunks, the devices' chunks interleaved as they would arrive."""
    start = datetime.now(UTC) - timedelta(days=1)
    out = []
    for first in range(0, per_device, chunk):
        for d in devices:
            points = tuple(
                Point(
                    device_uid=d["unique_id"],
                    fix_time=start + timedelta(seconds=i),
                    lat=41.0 + i * 1e-5,
                    lon=-87.0,
                    speed_mps=10.0,
                )
                for i in range(first, min(first + chunk, per_device))
            )
            out.append(
                Envelope(
                    tenant_id=tenant.id,
                    device_id=uuid.UUID(d["id"]),
                    vehicle_id=None,
                    received_at=datetime.now(UTC),
                    points=points,
                )
            )
    return out


async def _stored(api: Api, tenant: TenantUsers) -> int:
    async with api.db.system_session() as session:
        stmt = select(func.count()).select_from(Position).where(Position.tenant_id == tenant.id)
        return int(await session.scalar(stmt) or 0)


async def _wait(predicate: Any, limit_s: float, what: str) -> None:
    deadline = time.monotonic() + limit_s
    while not await predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def test_two_workers_share_the_shards_and_store_what_one_would(app: Api) -> None:
    tenant = await app.tenant(roles=["admin"])
    devices = [await device(app, tenant) for _ in range(12)]
    redis = app.app.state.ctafleet.redis
    workers = [
        process.build(app.settings, redis=redis, db=app.db, clock=app.clock, name=f"w{n}")
        for n in range(2)
    ]
    for w in workers:
        w.tick_s = 0.1  # rebalance quickly
    stop = asyncio.Event()
    tasks = [asyncio.create_task(w.run(stop)) for w in workers]
    try:

        async def balanced() -> bool:
            owned = [w.leases.owned for w in workers]
            return all(len(o) == SHARDS // 2 for o in owned) and not owned[0] & owned[1]

        await _wait(balanced, 10, "the shards to be shared out")
        queue = app.app.state.ctafleet.telemetry.queue
        envelopes = _envelopes(tenant, devices, per_device=300, chunk=25)
        for n in range(0, len(envelopes), 12):
            await queue.put(envelopes[n : n + 12])
        total = 12 * 300

        async def done() -> bool:
            return await _stored(app, tenant) == total

        await _wait(done, 60, "every point to be stored")
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    assert all(w.batches > 0 for w in workers), [w.batches for w in workers]
    assert await queue.depth() == 0
    # The derived data is what one worker in arrival order makes: each device's newest fix.
    async with app.db.system_session() as session:
        rows = await session.scalars(
            select(LastPosition).where(LastPosition.tenant_id == tenant.id)
        )
        last = {r.device_id: r.fix_time for r in rows}
        newest = dict(
            (
                await session.execute(
                    select(Position.device_id, func.max(Position.fix_time))
                    .where(Position.tenant_id == tenant.id)
                    .group_by(Position.device_id)
                )
            ).all()
        )
    assert last == newest
    assert len(last) == len(devices)
    # Both gave their leases back on stopping.
    assert not [k async for k in redis.scan_iter(f"{app.settings.telemetry.queue_prefix}:lease:*")]


def _worker_env(api: Api) -> dict[str, str]:
    s = api.settings
    return {
        **os.environ,
        "CTAFLEET_ENVIRONMENT": "test",
        "CTAFLEET_DATA_DIR": str(s.data_dir),
        "CTAFLEET_DATABASE__URL": s.database.url,
        "CTAFLEET_REDIS__URL": s.redis.url,
        "CTAFLEET_TELEMETRY__QUEUE_PREFIX": s.telemetry.queue_prefix,
        "CTAFLEET_TELEMETRY__QUEUE_SHARDS": str(s.telemetry.queue_shards),
        "CTAFLEET_TELEMETRY__LEASE_TTL_S": "2",
        # Large batches: a kill right after a commit lands in the middle of the next one.
        "CTAFLEET_TELEMETRY__WORKER_BATCH_ENTRIES": "16",
        "CTAFLEET_OBSERVABILITY__LOG_LEVEL": "WARNING",
    }


def _start_worker(api: Api, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "ctafleet", "worker"],
        env=_worker_env(api),
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


async def _pending(api: Api) -> int:
    redis = api.app.state.ctafleet.redis
    queue = api.app.state.ctafleet.telemetry.queue
    total = 0
    for key in queue.keys:
        info = await redis.xpending(key, GROUP)
        total += int(info["pending"])
    return total


async def test_a_worker_killed_mid_batch_loses_nothing_and_stores_nothing_twice(
    app: Api, tmp_path: Path
) -> None:
    tenant = await app.tenant(roles=["admin"])
    devices = [await device(app, tenant) for _ in range(8)]
    queue = app.app.state.ctafleet.telemetry.queue
    envelopes = _envelopes(tenant, devices, per_device=20_000, chunk=500)
    await queue.put(envelopes)
    total = 8 * 20_000
    log = tmp_path / "worker.log"
    # A kill between one batch's acknowledgement and the next read catches nothing in hand:
    # kill again (a fresh worker each time) until one lands in the middle of a batch.
    for _attempt in range(5):
        before = await _stored(app, tenant)
        first = _start_worker(app, log)
        try:

            async def more_stored(first: subprocess.Popen[bytes] = first, n: int = before) -> bool:
                assert first.poll() is None, log.read_text()
                return await _stored(app, tenant) > n

            await _wait(more_stored, 60, "a batch stored")
            first.send_signal(signal.SIGKILL)
            first.wait(10)
        finally:
            if first.poll() is None:
                first.kill()
        if await _pending(app) > 0:
            break
    stored_at_kill = await _stored(app, tenant)
    assert 0 < stored_at_kill < total
    pending = await _pending(app)
    assert pending > 0, "no kill caught a batch read and not yet acknowledged"
    second = _start_worker(app, log)
    try:

        async def all_stored() -> bool:
            assert second.poll() is None, log.read_text()
            return await _stored(app, tenant) >= total

        await _wait(all_stored, 120, "the successor to store everything")
        assert await _stored(app, tenant) == total
        assert await queue.depth() == 0
        assert await _pending(app) == 0
        second.send_signal(signal.SIGTERM)
        assert second.wait(20) == 0, log.read_text()
    finally:
        if second.poll() is None:
            second.kill()
    async with app.db.system_session() as session:
        per_device = dict(
            (
                await session.execute(
                    select(Position.device_id, func.count())
                    .where(Position.tenant_id == tenant.id)
                    .group_by(Position.device_id)
                )
            ).all()
        )
    assert per_device == {uuid.UUID(d["id"]): 20_000 for d in devices}
    redis = app.app.state.ctafleet.redis
    prefix = app.settings.telemetry.queue_prefix
    assert not [k async for k in redis.scan_iter(f"{prefix}:lease:*")]  # SIGTERM released
    assert "Traceback" not in log.read_text()


async def test_the_worker_refuses_to_start_without_redis(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "CTAFLEET_ENVIRONMENT": "test",
        "CTAFLEET_DATA_DIR": str(tmp_path),
        "CTAFLEET_REDIS__URL": "",
    }
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "ctafleet", "worker"],
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert b"CTAFLEET_REDIS__URL" in result.stderr
    assert b"Traceback" not in result.stderr
