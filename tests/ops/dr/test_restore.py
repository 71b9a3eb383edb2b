"""`dr restore` refuses before it stops anything, and a failure after the stop brings the
server back (or says it is down), on real clusters with the shipped pgBackRest configuration."""

from __future__ import annotations

import datetime as dt
import time

import pytest

from tests.ops.dr.conftest import Cluster, ClusterFactory, backed_up, run_dr

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


def _postmaster_pid(cluster: Cluster) -> int:
    return int((cluster.data / "postmaster.pid").read_text().split()[0])


def _state(cluster: Cluster) -> tuple[object, ...]:
    """What a refusal must leave as it was: the same postmaster, timeline, role and rows."""
    return (
        _postmaster_pid(cluster),
        cluster.value("SELECT timeline_id FROM pg_control_checkpoint()"),
        cluster.value("SELECT pg_is_in_recovery()"),
        tuple(r[0] for r in cluster.sql("SELECT id FROM ledger ORDER BY id")),
    )


def _utc(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat()


def test_every_refusal_leaves_the_server_running_and_unchanged(
    make_cluster: ClusterFactory,
) -> None:
    cluster = make_cluster("refuse")
    before_backup = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    backed_up(cluster, ("posix",))
    time.sleep(1.1)  # backup stop times are whole seconds
    cluster.sql("CREATE TABLE ledger (id int PRIMARY KEY)")
    cluster.sql("INSERT INTO ledger SELECT generate_series(1, 6)")
    cluster.switch_and_wait_archived()
    after_archive = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
    common = ["restore", "--pgbackrest-config", cluster.env["PGBACKREST_CONFIG"],
              "--repo", "2", "--yes"]  # fmt: skip
    state = _state(cluster)
    future = _utc(dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))
    refusals = {
        "future": (["--to-time", future], "in the future"),
        "no offset": (["--to-time", "2026-03-01T14:05:00"], "no UTC offset"),
        "not a time": (["--to-time", "yesterday"], "ISO 8601"),
        "before the first backup": (
            ["--to-time", _utc(before_backup)], "before the end of the first backup"
        ),
        "past the archive": (["--to-time", _utc(after_archive)], "--latest"),
        "unknown backup set": (["--latest", "--set", "20200101-000000F"], "no backup set"),
        "bad timeline": (["--latest", "--target-timeline", "one"], "--target-timeline"),
        "unparsable start command": (["--latest", "--start-command", "'pg_ctl"], "--start-command"),
        "missing start command": (
            ["--latest", "--start-command", "/nonexistent/pg_ctlcluster 15 main start"],
            "not an executable",
        ),
        "no delta on a full directory": (["--latest", "--no-delta"], "--delta"),
        "neither time nor latest": ([], "exactly one of"),
    }  # fmt: skip
    for name, (args, message) in refusals.items():
        result = run_dr(*common, *args, env=cluster.env)
        assert result.returncode == 1, (name, result.stdout, result.stderr)
        assert message in result.stderr, (name, result.stderr)
        assert "Traceback" not in result.stderr, name
        assert cluster.running(), f"{name}: the server was stopped"
        assert _state(cluster) == state, name
    # A repository that cannot be read (wrong passphrase) is a refusal too.
    wrong = {**cluster.env, "PGBACKREST_REPO2_CIPHER_PASS": "not-the-passphrase"}
    result = run_dr(*common, "--latest", env=wrong)
    assert result.returncode == 1, result.stderr
    assert _state(cluster) == state


def test_a_failure_after_the_stop_starts_the_server_again(make_cluster: ClusterFactory) -> None:
    """A damaged repository that `pgbackrest info` cannot see (the backup's manifest is gone)
    fails the restore only after the stop: the server comes back with its data."""
    cluster = make_cluster("comeback")
    backed_up(cluster, ("posix",))
    cluster.sql("CREATE TABLE ledger (id int PRIMARY KEY)")
    cluster.sql("INSERT INTO ledger SELECT generate_series(1, 6)")
    cluster.switch_and_wait_archived()
    repo = cluster.root / "pgbackrest" / "repo" / "backup" / "ctafleet"
    # Each backup's directory (`latest` is a link to the newest one).
    manifests = {p.resolve() for p in repo.glob("*/backup.manifest*") if p.is_file()}
    assert manifests, list(repo.rglob("*"))[:20]
    for path in manifests:
        path.unlink()
    pid = _postmaster_pid(cluster)

    result = run_dr("restore", "--pgbackrest-config", cluster.env["PGBACKREST_CONFIG"],
                    "--repo", "2", "--latest", "--yes", env=cluster.env)  # fmt: skip
    assert result.returncode == 3, result.stdout + result.stderr
    assert "the restore failed after the server was stopped" in result.stderr
    assert "started again with its original data" in result.stderr
    assert "accepting writes" in result.stderr
    assert "Traceback" not in result.stderr
    assert cluster.running()
    assert _postmaster_pid(cluster) != pid  # it was stopped, and started again
    assert [r[0] for r in cluster.sql("SELECT id FROM ledger ORDER BY id")] == [1, 2, 3, 4, 5, 6]
    assert cluster.value("SELECT pg_is_in_recovery()") is False
    assert cluster.value("SELECT timeline_id FROM pg_control_checkpoint()") == 1
    cluster.sql("INSERT INTO ledger VALUES (7)")  # a primary as before


def test_a_failed_recovery_that_cannot_come_back_says_the_server_is_down(
    make_cluster: ClusterFactory,
) -> None:
    """When the server cannot tell (no commit timestamps, archive statistics reset as after a
    crash), a target past the archive is found only by recovery itself; the server cannot
    start on that data, and the command says so with its own exit code."""
    cluster = make_cluster("down", extra_conf="track_commit_timestamp = off")
    backed_up(cluster, ("posix",))
    time.sleep(1.1)
    cluster.sql("CREATE TABLE ledger (id int PRIMARY KEY)")
    cluster.sql("INSERT INTO ledger SELECT generate_series(1, 5)")
    cluster.switch_and_wait_archived()
    cluster.sql("SELECT pg_stat_reset_shared('archiver')")
    target = _utc(dt.datetime.now(dt.UTC))
    result = run_dr("restore", "--pgbackrest-config", cluster.env["PGBACKREST_CONFIG"],
                    "--repo", "2", "--to-time", target, "--yes", env=cluster.env)  # fmt: skip
    assert result.returncode == 4, result.stdout + result.stderr
    assert "recovery ended before configured recovery target was reached" in result.stderr
    assert "The server is DOWN" in result.stderr
    assert "--latest" in result.stderr
    assert "Traceback" not in result.stderr
    assert not cluster.running()
    # What the message advises works: everything archived, on a new timeline.
    latest = run_dr("restore", "--pgbackrest-config", cluster.env["PGBACKREST_CONFIG"],
                    "--repo", "2", "--latest", "--yes", env=cluster.env)  # fmt: skip
    assert latest.returncode == 0, latest.stdout + latest.stderr
    assert [r[0] for r in cluster.sql("SELECT id FROM ledger ORDER BY id")] == [1, 2, 3, 4, 5]
