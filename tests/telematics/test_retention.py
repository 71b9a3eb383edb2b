"""Position retention: `ctafleet telemetry prune` per tenant, partitions dropped on PostgreSQL,
chunked deletes elsewhere, dry runs that change nothing. Each test has a database of its own:
a prune reaches every tenant."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text
from typer.testing import CliRunner

from ctafleet.cli import app as cli
from ctafleet.db.migrate import upgrade
from ctafleet.kernel.clock import FrozenClock
from ctafleet.telematics.ingest import writer
from ctafleet.telematics.models import Position
from ctafleet.telematics.retention import partition_end, prune
from tests.kit.app import Api, Backend, TenantUsers, make_tenant, own_app
from tests.telematics.ingest.kit import device, drain

pytestmark = pytest.mark.asyncio

AGES = (500, 390, 100, 10)  # days


@pytest.fixture(params=["sqlite", "postgres"])
def own_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'ctafleet.db'}"
        asyncio.run(upgrade(url))
        return Backend("sqlite", url, url)
    pg = request.getfixturevalue("fresh_pg")()
    asyncio.run(upgrade(pg.owner_url, app_role=pg.app_role))
    return Backend("postgres", pg.app_url, pg.owner_url, pg)


@pytest.fixture
async def api(own_backend: Backend, tmp_path: Path) -> AsyncIterator[Api]:
    clock = FrozenClock(datetime.now(UTC).replace(microsecond=0))
    async with own_app(own_backend, tmp_path, clock=clock) as api:
        yield api


async def _tenant_with_history(api: Api, retention_days: int | None) -> tuple[TenantUsers, str]:
    """A tenant whose device reported once at each of AGES days ago."""
    t = await make_tenant(api, roles=["admin"])
    if retention_days is not None:
        r = await api.client.patch(
            "/api/v1/telemetry/policy", json={"retention_days": retention_days}, headers=t.headers()
        )
        assert r.status_code == 200, r.text
    d = await device(api, t)
    now = api.clock.now()
    points = [
        {"time": (now - timedelta(days=age)).isoformat(), "lat": 41.9, "lon": -87.6} for age in AGES
    ]
    r = await api.client.post(
        "/api/v1/telemetry",
        json={"points": points},
        headers={"Authorization": f"Bearer {d['credential']}"},
    )
    assert r.status_code == 202, r.text
    assert r.json()["accepted"] == len(AGES)
    return t, d["id"]


async def _ages(api: Api, device_id: str) -> list[int]:
    async with api.db.system_session() as session:
        times = await session.scalars(
            select(Position.fix_time)
            .where(Position.device_id == uuid.UUID(device_id))
            .order_by(Position.fix_time)
        )
        return [round((api.clock.now() - t).total_seconds() / 86400) for t in times]


async def _partitions(api: Api) -> list[str]:
    if api.backend.name != "postgres":
        return []
    async with api.db.system_session() as session:
        rows = await session.scalars(
            text(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = 'positions'::regclass ORDER BY 1"
            )
        )
        return list(rows)


async def _setup(api: Api) -> dict[str, str]:
    """Three tenants: 30 days, the default (365), and 400 days, the longest."""
    _, short = await _tenant_with_history(api, 30)
    _, default = await _tenant_with_history(api, None)
    _, long = await _tenant_with_history(api, 400)
    assert await drain(api) == 3 * len(AGES)
    return {"short": short, "default": default, "long": long}


async def test_each_tenant_keeps_what_its_retention_says(api: Api) -> None:
    devices = await _setup(api)
    before = await _partitions(api)
    lines: list[str] = []
    report = await prune(
        api.db,
        now=api.clock.now(),
        default_days=api.settings.telemetry.retention_days,
        chunk=1,  # one position per transaction: the chunk loop, not one big delete
        progress=lines.append,
    )
    assert await _ages(api, devices["short"]) == [10]
    assert await _ages(api, devices["default"]) == [100, 10]
    assert await _ages(api, devices["long"]) == [390, 100, 10]
    if api.backend.name == "postgres":
        # Older than the longest retention (400 days) for everyone: gone whole, not row by row.
        oldest = (api.clock.now() - timedelta(days=500)).strftime("positions_p%Y%m")
        assert oldest in report.partitions
        assert all(
            partition_end(p) <= api.clock.now() - timedelta(days=400) for p in report.partitions
        )
        assert sorted(set(before) - set(report.partitions)) == await _partitions(api)
        assert sorted(t.retention_days for t in report.tenants) == [30, 365]
        assert report.deleted == 2 + 1  # 390 and 100 days of the short one, 390 of the default
        assert any(line.startswith("dropped partition") for line in lines)
    else:
        assert report.partitions == []
        assert sorted(t.retention_days for t in report.tenants) == [30, 365, 400]
        assert report.deleted == 3 + 2 + 1
    # Nothing left to do: a second run deletes nothing.
    again = await prune(api.db, now=api.clock.now(), default_days=365)
    assert again.deleted == 0
    assert again.partitions == []


async def test_a_late_point_for_a_dropped_month_is_stored_again(api: Api) -> None:
    devices = await _setup(api)
    await prune(api.db, now=api.clock.now(), default_days=365)
    _, d = await _tenant_with_history(api, 3650)  # keeps ten years: a new, late history
    assert await drain(api) == len(AGES)
    assert await _ages(api, d) == list(AGES)
    assert await _ages(api, devices["long"]) == [390, 100, 10]


async def test_a_dry_run_counts_and_changes_nothing(api: Api) -> None:
    await _setup(api)
    before = await _partitions(api)
    async with api.db.system_session() as session:
        rows = await session.scalar(select(func.count()).select_from(Position))
    lines: list[str] = []
    report = await prune(
        api.db, now=api.clock.now(), default_days=365, dry_run=True, progress=lines.append
    )
    async with api.db.system_session() as session:
        assert await session.scalar(select(func.count()).select_from(Position)) == rows
    assert await _partitions(api) == before
    assert report.dry_run
    if api.backend.name == "postgres":
        assert len(report.partitions) >= 1
        assert report.deleted == 3
        assert any(line.startswith("would drop partition") for line in lines)
    else:
        assert report.deleted == 6
    assert all("would delete" in line for line in lines if line.startswith("tenant"))


async def test_the_prune_command(api: Api, own_backend: Backend) -> None:
    devices = await _setup(api)
    env = {
        "CTAFLEET_DATA_DIR": str(api.settings.data_dir),
        "CTAFLEET_DATABASE__URL": own_backend.url,
        "CTAFLEET_DATABASE__ADMIN_URL": own_backend.admin_url,
        "CTAFLEET_OBSERVABILITY__LOG_LEVEL": "WARNING",
    }
    runner = CliRunner()

    def run(*args: str) -> Any:
        return runner.invoke(cli, ["telemetry", "prune", *args], env=env)

    result = await asyncio.to_thread(run, "--dry-run")
    assert result.exit_code == 0, result.output
    assert "would delete" in result.output
    assert await _ages(api, devices["short"]) == list(AGES)
    result = await asyncio.to_thread(run, "--chunk", "0")
    assert result.exit_code == 2
    assert await _ages(api, devices["short"]) == list(AGES)
    result = await asyncio.to_thread(run, "--chunk", "2")
    assert result.exit_code == 0, result.output
    assert "deleted" in result.output
    assert await _ages(api, devices["short"]) == [10]
    writer.forget_partitions()


@pytest.mark.parametrize("own_backend", ["postgres"], indirect=True)  # partitions are its own
async def test_the_worker_creates_the_coming_months_partitions(api: Api) -> None:
    worker = api.app.state.ctafleet.telemetry.worker
    api.clock.advance(200 * 86400)  # months no partition exists for yet
    coming = [m.strftime("positions_p%Y%m") for m in writer.months_ahead(api.clock.now())]
    assert not set(coming) & set(await _partitions(api))
    await worker.run_once()
    assert set(coming) <= set(await _partitions(api))
