"""Retention: prune keeps exactly what the policy says, and never the last backup's absence."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ctafleet.config import Settings
from ctafleet.kernel.clock import FrozenClock
from ctafleet.ops.backup import retention
from ctafleet.ops.backup.service import Backups
from ctafleet.storage import LocalStore
from tests.ops.backup.conftest import AgeKey, local_cli

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)


def ago(days: float) -> datetime:
    return NOW - timedelta(days=days)


def test_retention_days_alone() -> None:
    backups = [(f"b{d}", ago(d)) for d in (0, 1, 29, 30, 31, 90)]
    assert retention.keep(backups, NOW, retention_days=30) == {"b0", "b1", "b29"}


def test_newest_backup_is_kept_however_old() -> None:
    backups = [("old", ago(400)), ("older", ago(500))]
    assert retention.keep(backups, NOW, retention_days=30) == {"old"}
    assert retention.keep([], NOW, retention_days=30) == set()


def test_keep_daily_weekly_monthly() -> None:
    # Two backups a day for 120 days, at 02:00 and 14:00 UTC.
    backups = []
    for day in range(120):
        for hour in (2, 14):
            when = datetime(2026, 6, 15, hour, tzinfo=UTC) - timedelta(days=day)
            backups.append((when.strftime("%m%d-%H"), when))
    now = datetime(2026, 6, 15, 20, 0, tzinfo=UTC)  # a Monday
    kept = retention.keep(
        backups, now, retention_days=1, keep_daily=3, keep_weekly=2, keep_monthly=4
    )
    assert kept == {
        "0615-14", "0615-02",  # younger than a day
        "0614-14", "0613-14",  # daily: the newest of 06-15 (above), 06-14, 06-13
        # weekly: the newest of ISO week 25 (06-15) and of week 24 (Sunday 06-14): above
        "0531-14", "0430-14", "0331-14",  # monthly: June (above), May, April, March
    }  # fmt: skip


def _settings(tmp_path: Path, key: AgeKey, url: str, **backup: object) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database={"url": url},
        storage={"backend": "local", "local_path": str(tmp_path / "objects")},
        backup={"age_recipient": key.recipient, **backup},
    )


@pytest.fixture
def small_sqlite(tmp_path: Path) -> Path:
    path = tmp_path / "small.db"
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        conn.execute("INSERT INTO t (v) VALUES ('x')")
    conn.close()
    return path


def _backups_at(
    settings: Settings, store: LocalStore, url: str, days_ago: list[float], now: datetime
) -> dict[float, str]:
    ids = {}
    for days in days_ago:
        backups = Backups(settings, store, clock=FrozenClock(now - timedelta(days=days)))
        ids[days] = asyncio.run(backups.create(url)).id
    return ids


def test_prune_command_applies_the_default_30_days(
    small_sqlite: Path, age_key: AgeKey, tmp_path: Path
) -> None:
    url = f"sqlite:///{small_sqlite}"
    settings = _settings(tmp_path, age_key, url)
    store = LocalStore(tmp_path / "objects")
    ids = _backups_at(settings, store, url, [0.1, 3, 29, 31, 60, 400], datetime.now(UTC))
    # A run that died after storing its object, two days ago, and one that may still be going.
    stale = store.put_bytes("backups/20200101T000000Z-dead00.sqlite.zst.age", b"partial")
    old = (datetime.now(UTC) - timedelta(days=2)).timestamp()
    os.utime(tmp_path / "objects" / stale.key, (old, old))
    store.put_bytes("backups/20200101T000000Z-fresh0.sqlite.zst.age", b"running")

    cli = local_cli(tmp_path, age_key, url)
    dry = cli("prune", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert f"would delete {ids[400]}" in dry.stdout
    assert len(Backups(settings, store).manifests()) == 6

    result = cli("prune")
    assert result.exit_code == 0, result.output
    left = {m.id for m in Backups(settings, store).manifests()}
    assert left == {ids[0.1], ids[3], ids[29]}
    keys = {info.key for info in store.list("backups/")}
    for gone in (ids[31], ids[60], ids[400]):
        assert not any(k.startswith(f"backups/{gone}") for k in keys)
    assert stale.key not in keys
    assert "backups/20200101T000000Z-fresh0.sqlite.zst.age" in keys
    assert f"deleted incomplete {stale.key}" in result.stdout


def test_prune_with_keep_monthly_from_settings(
    small_sqlite: Path, age_key: AgeKey, tmp_path: Path
) -> None:
    url = f"sqlite:///{small_sqlite}"
    settings = _settings(tmp_path, age_key, url, keep_monthly=2, retention_days=7)
    store = LocalStore(tmp_path / "objects")
    # NOW is 2026-06-15: 1 and 5 days ago are June; 20 days ago is May 26; 40, 50 days ago
    # April 27 / May 6... computed: 40 -> 2026-05-06, 50 -> 2026-04-26, 80 -> 2026-03-27.
    ids = _backups_at(settings, store, url, [1, 5, 20, 40, 50, 80], NOW)
    report = Backups(settings, store, clock=FrozenClock(NOW)).prune()
    # within 7 days: 1, 5. Monthly (2 months): newest of June (1 day), newest of May (20).
    assert set(report.kept) == {ids[1], ids[5], ids[20]}
    assert set(report.deleted) == {ids[40], ids[50], ids[80]}
    assert report.errors == []
