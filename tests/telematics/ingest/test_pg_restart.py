"""PostgreSQL restarted (cleanly, and crashed) in the middle of a sustained ingest: every
acknowledged point is stored exactly once afterwards.

The server is one this test makes with initdb and drives with pg_ctl, on a spare loopback
port, never the shared one; the queue is the real Redis. Devices keep being acknowledged
while the database is down (the queue takes their points); the worker's batches fail, are
read again, and succeed once the server is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import select

from ctafleet.db.migrate import upgrade
from ctafleet.ops.dr.proc import DrError, OsUser, find_pg_bin
from ctafleet.telematics.ingest import process
from ctafleet.telematics.models import Position
from tests.conftest import service_unavailable
from tests.kit.app import Api, Backend, make_tenant, own_app
from tests.kit.net import free_port
from tests.telematics.ingest.kit import device

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]


@dataclass
class Server:
    root: Path
    port: int
    user: OsUser

    @property
    def data(self) -> Path:
        return self.root / "data"

    def run(self, *argv: str, timeout: float = 120) -> None:
        result = subprocess.run(
            argv,
            user=self.user.uid,
            group=self.user.gid,
            extra_groups=[],
            env={**os.environ, "HOME": self.user.home},
            cwd="/",
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise AssertionError(f"{' '.join(argv)}: {result.stderr}{result.stdout}")

    def pg_ctl(self, *args: str) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        self.run(
            find_pg_bin("pg_ctl", self.data),
            *("-D", str(self.data), "-l", str(self.root / "server.log")),
            *("-o", options, "-w", "-t", "60", *args),
        )

    def url(self, user: str = "postgres", database: str = "postgres") -> str:
        return f"postgresql+asyncpg://{user}@127.0.0.1:{self.port}/{database}"


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    if os.geteuid() != 0:
        service_unavailable("PostgreSQL runs as the postgres account here: run the tests as root")
    try:
        user = OsUser.named("postgres")
        initdb = find_pg_bin("initdb")
    except DrError as exc:
        service_unavailable(f"{exc} (the postgresql package)")
    root = Path(tempfile.mkdtemp(prefix="ctafleet-pgr-", dir="/tmp"))
    root.chmod(0o755)
    os.chown(root, user.uid, user.gid)
    s = Server(root, free_port(), user)
    s.run(initdb, "-D", str(s.data), "-U", "postgres", "--auth=trust", "--no-sync")
    s.pg_ctl("start")
    try:
        yield s
    finally:
        with contextlib.suppress(AssertionError):
            s.pg_ctl("-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def backend(server: Server) -> Backend:
    import asyncpg

    suffix = uuid.uuid4().hex[:8]
    name, role = f"ctafleet_{suffix}", f"ctafleet_app_{suffix}"

    async def create() -> None:
        conn = await asyncpg.connect(server.url().replace("+asyncpg", ""))
        try:
            await conn.execute(f"CREATE DATABASE {name}")
            await conn.execute(f"CREATE ROLE {role} LOGIN NOSUPERUSER NOBYPASSRLS")
        finally:
            await conn.close()
        await upgrade(server.url(database=name), app_role=role)

    asyncio.run(create())
    return Backend("postgres", server.url(role, name), server.url(database=name))


@pytest.fixture
def prefix(queue_prefix: str) -> str:
    return queue_prefix


@pytest_asyncio.fixture
async def app(backend: Backend, redis_url: str, prefix: str, tmp_path: Path) -> AsyncIterator[Api]:
    telemetry = {"queue_prefix": prefix, "queue_shards": 4, "lease_ttl_s": 5}
    async with own_app(backend, tmp_path, redis={"url": redis_url}, telemetry=telemetry) as api:
        yield api


@pytest.mark.parametrize("mode", ["fast", "immediate"])
async def test_a_restart_during_ingest_loses_and_duplicates_nothing(
    app: Api, server: Server, mode: str
) -> None:
    tenant = await make_tenant(app, roles=["admin"])
    devices = [await device(app, tenant) for _ in range(3)]
    redis = app.app.state.ctafleet.redis
    worker = process.build(app.settings, redis=redis, db=app.db, clock=app.clock, name="w")
    stop_worker = asyncio.Event()
    working = asyncio.create_task(worker.run(stop_worker))
    acknowledged: dict[str, set[Any]] = {d["id"]: set() for d in devices}
    refused = 0
    sending = asyncio.Event()
    start = app.clock.now() - timedelta(days=1)  # far from the future the API refuses

    async def send() -> None:
        nonlocal refused
        n = 0
        while not sending.is_set():
            d = devices[n % len(devices)]
            times = [start + timedelta(seconds=n * 10 + k) for k in range(10)]
            body = {"points": [{"time": t.isoformat(), "lat": 41.9, "lon": -87.6} for t in times]}
            r = await app.client.post(
                "/api/v1/telemetry",
                json=body,
                headers={"Authorization": f"Bearer {d['credential']}"},
            )
            if r.status_code == 202:
                assert r.json()["rejected"] == [], r.text
                acknowledged[d["id"]].update(times)
            else:
                refused += 1
            n += 1
            await asyncio.sleep(0.005)

    sender = asyncio.create_task(send())
    await asyncio.sleep(1.0)
    # Stop and start the server under the running ingest (fast: clean shutdown; immediate:
    # a crash, the transaction in flight lost and recovered from the WAL on start).
    await asyncio.to_thread(server.pg_ctl, "-m", mode, "stop")
    await asyncio.sleep(1.0)
    await asyncio.to_thread(server.pg_ctl, "start")
    await asyncio.sleep(1.0)
    sending.set()
    await sender
    expected = sum(len(v) for v in acknowledged.values())
    assert expected > 300, "too few points acknowledged to tell anything"

    async def stored() -> dict[str, list[Any]]:
        async with app.db.system_session() as session:
            out: dict[str, list[Any]] = {}
            for d in devices:
                rows = await session.scalars(
                    select(Position.fix_time).where(Position.device_id == uuid.UUID(d["id"]))
                )
                out[d["id"]] = list(rows)
            return out

    for _ in range(300):
        found = await stored()
        if sum(len(v) for v in found.values()) >= expected:
            break
        await asyncio.sleep(0.1)
    stop_worker.set()
    await working
    for d in devices:
        times = found[d["id"]]
        assert len(times) == len(set(times)), "a point stored twice"
        assert set(times) == acknowledged[d["id"]], "acknowledged points missing or extra"
    assert await app.app.state.ctafleet.telemetry.queue.depth() == 0
    assert refused == 0  # the queue took everything while the database was away
