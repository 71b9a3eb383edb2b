"""`dr status`: RPO now from the archiver, breached by a tiny target and by broken archiving."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.ops.dr.conftest import ClusterFactory, backed_up, run_dr, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


def _checks(stdout: str) -> dict[str, dict[str, object]]:
    return {c["name"]: c for c in json.loads(stdout)["checks"]}


def test_status_reports_rpo_and_fails_when_it_is_breached(
    make_cluster: ClusterFactory, tmp_path: Path
) -> None:
    cluster = make_cluster("status")
    backed_up(cluster, ("posix",))
    cluster.sql("CREATE TABLE pings (at timestamptz DEFAULT now())")
    cluster.switch_and_wait_archived()
    base = ["status", "--pg-url", cluster.url, "--pgbackrest-config",
            cluster.env["PGBACKREST_CONFIG"], "--no-logical",
            "--drill-report", str(tmp_path / "no-drill-yet.json")]  # fmt: skip

    healthy = run_dr(*base, "--json", env=cluster.env)
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    checks = _checks(healthy.stdout)
    assert checks["wal_archive_rpo"]["state"] == "ok"
    assert float(checks["wal_archive_rpo"]["value"]) < 60  # type: ignore[arg-type]
    assert checks["physical_backup_age"]["state"] == "ok"
    assert checks["rto_estimate"]["state"] == "unknown"
    # What cannot be measured fails only when asked to.
    assert run_dr(*base, "--strict", env=cluster.env).returncode == 1

    # A commit not yet archived ages past a 1 s target.
    cluster.sql("INSERT INTO pings DEFAULT VALUES")
    time.sleep(1.2)
    tight = run_dr(*base, "--rpo-target", "1", env=cluster.env)
    assert tight.returncode == 1, tight.stdout
    assert "wal_archive_rpo      BREACH" in tight.stdout
    detail = _checks(run_dr(*base, "--rpo-target", "1", "--json", env=cluster.env).stdout)
    assert float(detail["wal_archive_rpo"]["value"]) >= 1  # type: ignore[arg-type]
    assert detail["wal_archive_rpo"]["data"]["unarchived_bytes"] > 0  # type: ignore[index]

    # Archiving stops working: a breach at once, whatever the age.
    cluster.sql("ALTER SYSTEM SET archive_command = '/bin/false'")
    cluster.sql("SELECT pg_reload_conf()")
    cluster.sql("INSERT INTO pings DEFAULT VALUES")
    cluster.sql("SELECT pg_switch_wal()")
    wait_for(
        lambda: cluster.value("SELECT failed_count FROM pg_stat_archiver") > 0,
        30,
        "archive_command to fail",
    )
    broken = run_dr(*base, "--json", env=cluster.env)
    assert broken.returncode == 1
    archive = _checks(broken.stdout)["wal_archive_rpo"]
    assert archive["state"] == "breach"
    assert "FAILING" in str(archive["detail"])
