"""Failover: synchronous streaming standby, primary killed mid-write, `dr failover`."""

from __future__ import annotations

import json
import stat
import threading
import time
from pathlib import Path

import psycopg
import pytest

from ctafleet.ops.dr.proc import find_pg_bin
from tests.ops.dr.conftest import Cluster, ClusterFactory, as_postgres, run_dr, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


class Writer(threading.Thread):
    """Commits one row per transaction until the server goes away; `acknowledged` holds
    every id whose COMMIT returned, which synchronous replication promises to keep."""

    def __init__(self, cluster: Cluster) -> None:
        super().__init__(daemon=True)
        self.cluster = cluster
        self.acknowledged: list[int] = []
        self.error: Exception | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            with self.cluster.connect(autocommit=False) as conn:
                n = 0
                while not self.stop.is_set():
                    n += 1
                    conn.execute(b"INSERT INTO trips (id) VALUES (%s)", (n,))
                    conn.commit()
                    self.acknowledged.append(n)
        except psycopg.Error as exc:
            self.error = exc


def make_standby(make_cluster: ClusterFactory, primary: Cluster) -> Cluster:
    standby = make_cluster("standby", archive=False, initdb=False)
    as_postgres(
        standby.user,
        [find_pg_bin("pg_basebackup", primary.data), "-D", str(standby.data), "-R",
         "-X", "stream", "-c", "fast", "-h", str(primary.socket_dir), "-p", str(primary.port),
         "-U", "postgres"],
    )  # fmt: skip
    # The copied configuration is the primary's; later lines win. cluster_name is the
    # application_name the standby streams under, the name synchronous_standby_names lists.
    with (standby.data / "postgresql.conf").open("a") as handle:
        handle.write(
            f"port = {standby.port}\n"
            f"unix_socket_directories = '{standby.socket_dir}'\n"
            "cluster_name = 'standby1'\n"
        )
    standby.start()
    return standby


def test_failover_keeps_every_acknowledged_commit(
    make_cluster: ClusterFactory, tmp_path: Path
) -> None:
    primary = make_cluster(
        "primary", archive=False, extra_conf="synchronous_standby_names = 'standby1'"
    )
    primary.start()
    # Every commit now waits for standby1, so the standby comes first, then the table.
    standby = make_standby(make_cluster, primary)
    wait_for(
        lambda: primary.sql(
            "SELECT 1 FROM pg_stat_replication WHERE application_name = 'standby1' "
            "AND state = 'streaming' AND sync_state = 'sync'"
        ),
        30,
        "standby1 to stream synchronously",
    )
    assert primary.value("SHOW synchronous_commit") == "on"
    primary.sql("CREATE TABLE trips (id bigint PRIMARY KEY, at timestamptz DEFAULT now())")

    # Replica lag as `dr status` sees it, from both ends.
    from_primary = run_dr("status", "--pg-url", primary.url, "--no-pgbackrest", "--no-logical",
                          "--expect-standbys", "1", "--json")  # fmt: skip
    checks = {c["name"]: c for c in json.loads(from_primary.stdout)["checks"]}
    assert checks["replica_lag"]["state"] == "ok", checks["replica_lag"]["detail"]
    assert checks["replica_lag"]["data"]["standbys"][0]["sync_state"] == "sync"
    from_standby = run_dr("status", "--pg-url", standby.url, "--no-pgbackrest", "--no-logical",
                          "--json")  # fmt: skip
    checks = {c["name"]: c for c in json.loads(from_standby.stdout)["checks"]}
    assert checks["replica_lag"]["state"] == "ok", checks["replica_lag"]["detail"]
    assert checks["replica_lag"]["data"]["role"] == "standby"

    env_file = tmp_path / "ctafleet.env"
    old_url = f"postgresql+asyncpg://ctafleet_app:app-secret@127.0.0.1:{primary.port}/ctafleet"
    old_admin = (
        f"postgresql+asyncpg://ctafleet_owner:owner-secret@127.0.0.1:{primary.port}/ctafleet"
    )
    env_file.write_text(
        f"CTAFLEET_ENVIRONMENT=production\nCTAFLEET_DATABASE__URL={old_url}\n"
        f"CTAFLEET_DATABASE__ADMIN_URL={old_admin}\n"
    )
    failover_args = [
        "failover", "--standby-url", standby.url, "--old-primary-url", primary.url,
        "--app-url", old_url, "--admin-url", old_admin, "--new-host", "127.0.0.1",
        "--write-env", str(env_file), "--json",
    ]  # fmt: skip

    # While the old primary still takes writes, promoting would make two primaries.
    refused = run_dr(*failover_args)
    assert refused.returncode == 1
    assert "split brain" in refused.stderr
    assert standby.value("SELECT pg_is_in_recovery()") is True

    writer = Writer(primary)
    writer.start()
    wait_for(lambda: len(writer.acknowledged) >= 200, 30, "200 synchronous commits")
    primary.kill9()
    writer.join(10)
    assert not writer.is_alive()
    assert writer.error is not None  # it was stopped by the crash, mid-stream
    acknowledged = set(writer.acknowledged)

    started = time.monotonic()
    result = run_dr(*failover_args)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr + result.stdout
    report = json.loads(result.stdout)
    print(
        f"\nfailover: {len(acknowledged)} acknowledged commits, command {elapsed:.2f} s, {report}"
    )

    assert standby.value("SELECT pg_is_in_recovery()") is False
    present = {r[0] for r in standby.sql("SELECT id FROM trips")}
    missing = acknowledged - present
    assert not missing, f"{len(missing)} acknowledged commits lost: {sorted(missing)[:10]}"

    # It takes writes without waiting for the standby that no longer exists.
    standby.sql("INSERT INTO trips (id) VALUES (-1)")
    assert any("synchronous_standby_names" in note for note in report["notes"])
    assert report["was_standby"] is True
    assert report["timeline"] == 2

    new_url = f"postgresql+asyncpg://ctafleet_app:***@127.0.0.1:{standby.port}/ctafleet"
    assert report["env"]["CTAFLEET_DATABASE__URL"] == new_url
    written = env_file.read_text().splitlines()
    assert written == [
        "CTAFLEET_ENVIRONMENT=production",
        f"CTAFLEET_DATABASE__URL={new_url.replace('***', 'app-secret')}",
        "CTAFLEET_DATABASE__ADMIN_URL="
        f"postgresql+asyncpg://ctafleet_owner:owner-secret@127.0.0.1:{standby.port}/ctafleet",
    ]
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
