"""`dr drill`: restore into a scratch instance, verify, measure RTO and RPO, report them."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ctafleet.db.migrate import upgrade
from ctafleet.ops.dr.report import METRIC_NAMES
from tests.conftest import PgServer
from tests.ops.dr.conftest import ClusterFactory, backed_up, run_dr, with_stanza

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

POSITIONS = 50_000


def _metrics(path: Path) -> dict[str, float]:
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(path.read_text())
        for sample in family.samples
        if sample.labels.get("mode") in ("physical", "logical")
    }


def _generate(connect: Any, first: int, count: int) -> None:
    with connect() as conn:
        conn.execute(
            b"INSERT INTO drill_positions (id, vehicle, fix_time, lat, lon) "
            b"SELECT n, n %% 300, now() - (n || ' s')::interval, 41.8 + n * 1e-6, -87.6 "
            b"FROM generate_series(%s::bigint, %s::bigint) n",
            (first, first + count - 1),
        )


def test_physical_drill_measures_rto_and_rpo(make_cluster: ClusterFactory) -> None:
    # No forced WAL switch: rows written after the last archived segment stay unarchived
    # until the drill has run, so the data loss it measures is deterministic.
    cluster = make_cluster("drill", extra_conf="archive_timeout = 0")
    with_stanza(cluster)
    cluster.sql("CREATE DATABASE ctafleet")
    asyncio.run(upgrade(cluster.db_url("ctafleet").replace("postgresql:", "postgresql+asyncpg:")))
    app = cluster.db_url("ctafleet")
    with cluster.connect("ctafleet") as conn:
        conn.execute(
            b"CREATE TABLE drill_positions (id bigint PRIMARY KEY, vehicle int, "
            b"fix_time timestamptz, lat float8, lon float8)"
        )
    _generate(lambda: cluster.connect("ctafleet"), 1, POSITIONS)
    backed_up(cluster, ("posix",))
    _generate(lambda: cluster.connect("ctafleet"), POSITIONS + 1, 1000)
    cluster.switch_and_wait_archived()
    time.sleep(1.0)
    _generate(lambda: cluster.connect("ctafleet"), POSITIONS + 1001, 25)  # never archived

    scratch = cluster.root / "scratch"
    scratch.mkdir()
    shutil.chown(scratch, "postgres", "postgres")
    report_path, metrics_path = cluster.root / "drill.json", cluster.root / "drill.prom"
    args = ["drill", "--pgbackrest-config", cluster.env["PGBACKREST_CONFIG"], "--repo", "2",
            "--source-url", app, "--scratch-dir", str(scratch), "--report", str(report_path),
            "--metrics-file", str(metrics_path),
            "--sanity-query", "SELECT count(*) > 0 FROM drill_positions"]  # fmt: skip

    first = run_dr(*args, "--json", env=cluster.env)
    assert first.returncode == 0, first.stderr + first.stdout
    report = json.loads(report_path.read_text())
    print(f"\ndrill with unarchived rows: rto={report['rto_seconds']} s "
          f"rpo={report['rpo_seconds']} s restore={report['restore']}")  # fmt: skip
    assert report["success"] is True
    assert report["rpo_method"] == "commit-timestamps"
    assert report["lost_transactions"] is True
    # The 25 rows committed about a second after the last archived ones are the loss.
    assert 0.9 <= report["rpo_seconds"] <= 15, report["rpo_seconds"]
    assert report["lost_wal_bytes"] > 0
    assert 0 < report["rto_seconds"] <= report["targets"]["rto_seconds"]
    verification = report["verification"]
    assert verification["ok"]
    assert not verification["counts_must_match"]
    assert verification["count_mismatches"] == [
        {
            "table": "public.drill_positions",
            "source": POSITIONS + 1025,
            "restored": POSITIONS + 1000,
        }
    ]
    assert verification["revision"]["source"] == verification["revision"]["restored"] is not None
    assert verification["tables_compared"] >= 10
    assert list(scratch.iterdir()) == []  # scratch instance stopped and removed

    metrics = _metrics(metrics_path)
    assert set(METRIC_NAMES) <= set(metrics)
    assert metrics["ctafleet_dr_drill_success"] == 1
    assert metrics["ctafleet_dr_drill_rto_seconds"] == pytest.approx(report["rto_seconds"])
    assert metrics["ctafleet_dr_drill_rpo_seconds"] == pytest.approx(report["rpo_seconds"])
    first_success = metrics["ctafleet_dr_drill_last_success_timestamp_seconds"]
    assert abs(first_success - time.time()) < 120

    # `dr status` takes its RTO estimate from the report.
    status = ["status", "--pg-url", cluster.url, "--no-pgbackrest", "--no-logical",
              "--drill-report", str(report_path), "--json"]  # fmt: skip
    rto = {c["name"]: c for c in json.loads(run_dr(*status).stdout)["checks"]}["rto_estimate"]
    assert rto["state"] == "ok"
    assert rto["value"] == report["rto_seconds"]
    breached = run_dr(*status, "--rto-target", "0.001")
    assert breached.returncode == 1
    assert '"state": "breach"' in breached.stdout

    # Once the WAL is archived nothing is lost and every count must match; a false sanity
    # query fails the drill, and the last success stays the first drill's.
    cluster.switch_and_wait_archived()
    second = run_dr(*args, "--sanity-query", "SELECT count(*) = 0 FROM drill_positions",
                    env=cluster.env)  # fmt: skip
    assert second.returncode == 1, second.stdout
    assert "drill FAILED" in second.stdout
    report = json.loads(report_path.read_text())
    assert report["success"] is False
    assert report["rpo_seconds"] == 0
    assert report["lost_transactions"] is False
    verification = report["verification"]
    assert verification["counts_must_match"]
    assert verification["count_mismatches"] == []
    assert verification["problems"] == [
        "sanity query failed: SELECT count(*) = 0 FROM drill_positions"
    ]
    metrics = _metrics(metrics_path)
    assert metrics["ctafleet_dr_drill_success"] == 0
    assert metrics["ctafleet_dr_drill_last_success_timestamp_seconds"] == first_success
    rto = {c["name"]: c for c in json.loads(run_dr(*status).stdout)["checks"]}["rto_estimate"]
    assert rto["state"] == "breach"
    assert "failed" in rto["detail"]


def test_logical_drill_through_the_backup_cli(
    pg_server: PgServer, fresh_pg: Any, tmp_path: Path
) -> None:
    from pyrage import x25519

    db = fresh_pg()
    asyncio.run(upgrade(db.owner_url))
    asyncio.run(
        pg_server.execute(
            "CREATE TABLE drill_positions (id bigint PRIMARY KEY, vehicle int)",
            "INSERT INTO drill_positions SELECT n, n % 300 FROM generate_series(1, 20000) n",
            database=db.name,
        )
    )
    identity = x25519.Identity.generate()
    key_file = tmp_path / "backup.key"
    key_file.write_text(str(identity) + "\n")
    key_file.chmod(0o600)
    env = {
        "CTAFLEET_DATABASE__URL": db.owner_url,
        "CTAFLEET_DATABASE__ADMIN_URL": db.owner_url,
        "CTAFLEET_DATA_DIR": str(tmp_path / "data"),
        "CTAFLEET_STORAGE__BACKEND": "local",
        "CTAFLEET_STORAGE__LOCAL_PATH": str(tmp_path / "objects"),
        "CTAFLEET_BACKUP__AGE_RECIPIENT": str(identity.to_public()),
        "CTAFLEET_BACKUP__IDENTITY_FILE": str(key_file),
    }
    created = subprocess.run(
        [sys.executable, "-m", "ctafleet.cli", "backup", "create"],
        env={**os.environ, **env}, capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr + created.stdout
    report_path, metrics_path = tmp_path / "drill.json", tmp_path / "drill.prom"
    result = run_dr(
        "drill", "--mode", "logical", "--source-url", db.owner_url,
        "--report", str(report_path), "--metrics-file", str(metrics_path),
        "--sanity-query", "SELECT count(*) = 20000 FROM drill_positions", env=env,
    )  # fmt: skip
    report = json.loads(report_path.read_text())
    print(f"\nlogical drill: rto={report['rto_seconds']} s rpo={report['rpo_seconds']} s")
    assert result.returncode == 0, result.stderr + result.stdout
    assert report["success"] is True
    assert report["backup"]["id"] == created.stdout.strip().splitlines()[-1]
    assert report["rpo_seconds"] == 0
    assert report["rto_seconds"] > 0
    assert report["verification"]["counts_must_match"] is True
    metrics = _metrics(metrics_path)
    assert set(METRIC_NAMES) <= set(metrics)
    assert metrics["ctafleet_dr_drill_success"] == 1


def test_logical_drill_verdict_exit_code_and_metric_agree(
    pg_server: PgServer, fresh_pg: Any, tmp_path: Path
) -> None:
    """A logical drill's RPO is judged against the logical target (the backup schedule's), and
    every outcome prints, exits and publishes the same verdict."""
    from pyrage import x25519

    db = fresh_pg()
    asyncio.run(upgrade(db.owner_url))
    asyncio.run(
        pg_server.execute(
            "CREATE TABLE drill_positions (id bigint PRIMARY KEY, vehicle int)",
            "INSERT INTO drill_positions SELECT n, n % 300 FROM generate_series(1, 2000) n",
            database=db.name,
        )
    )
    identity = x25519.Identity.generate()
    key_file = tmp_path / "backup.key"
    key_file.write_text(str(identity) + "\n")
    key_file.chmod(0o600)
    env = {
        "CTAFLEET_DATABASE__URL": db.owner_url,
        "CTAFLEET_DATA_DIR": str(tmp_path / "data"),
        "CTAFLEET_STORAGE__BACKEND": "local",
        "CTAFLEET_STORAGE__LOCAL_PATH": str(tmp_path / "objects"),
        "CTAFLEET_BACKUP__AGE_RECIPIENT": str(identity.to_public()),
        "CTAFLEET_BACKUP__IDENTITY_FILE": str(key_file),
    }
    created = subprocess.run(
        [sys.executable, "-m", "ctafleet.cli", "backup", "create"],
        env={**os.environ, **env}, capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr + created.stdout
    # Commits after the backup started: the restore lacks them, as any restore of a daily
    # backup lacks the day since. The RPO is then more than a second.
    time.sleep(1.5)
    asyncio.run(
        pg_server.execute(
            "INSERT INTO drill_positions SELECT n, 0 FROM generate_series(2001, 2010) n",
            database=db.name,
        )
    )
    report_path, metrics_path = tmp_path / "drill.json", tmp_path / "drill.prom"
    common = ["drill", "--mode", "logical", "--source-url", db.owner_url,
              "--report", str(report_path), "--metrics-file", str(metrics_path)]  # fmt: skip

    def drill(*extra: str, **more_env: str) -> tuple[subprocess.CompletedProcess[str], Any]:
        result = run_dr(*common, *extra, env={**env, **more_env})
        return result, json.loads(report_path.read_text())

    # The physical target (here 1 s) does not apply: the logical one (26 h by default) does.
    passed, report = drill("--rpo-target", "1")
    assert passed.returncode == 0, passed.stderr + passed.stdout
    assert "logical drill PASSED" in passed.stdout
    assert "MISSED" not in passed.stdout
    assert report["success"] is True
    assert report["targets"]["rpo_seconds"] == 26 * 3600
    assert report["lost_transactions"] is True
    assert report["rpo_seconds"] > 1
    assert report["failures"] == []
    metrics = _metrics(metrics_path)
    assert metrics["ctafleet_dr_drill_success"] == 1
    first_success = metrics["ctafleet_dr_drill_last_success_timestamp_seconds"]

    # Each way of failing: FAILED, exit 1 and success 0, the last success kept.
    outcomes = {
        "rpo": (("--logical-rpo-target", "1"), {}, "RPO"),
        "rto": (("--rto-target", "0"), {}, "RTO"),
        "verification": (
            ("--sanity-query", "SELECT count(*) = 0 FROM drill_positions"), {}, "sanity query"
        ),
        "error": ((), {"CTAFLEET_STORAGE__LOCAL_PATH": str(tmp_path / "empty")}, "no backup"),
    }  # fmt: skip
    for outcome, (extra, more_env, reason) in outcomes.items():
        failed, report = drill(*extra, **more_env)
        assert failed.returncode == 1, (outcome, failed.stdout, failed.stderr)
        assert "logical drill FAILED" in failed.stdout, outcome
        assert "PASSED" not in failed.stdout, outcome
        assert report["success"] is False, outcome
        assert any(reason in f for f in report["failures"]), (outcome, report["failures"])
        assert reason in failed.stdout, outcome
        metrics = _metrics(metrics_path)
        assert metrics["ctafleet_dr_drill_success"] == 0, outcome
        assert metrics["ctafleet_dr_drill_last_success_timestamp_seconds"] == first_success
