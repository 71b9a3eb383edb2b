"""Point-in-time recovery with the shipped pgBackRest configuration, on both repositories."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from tests.ops.dr.conftest import (
    REPO_NUMBER,
    Azurite,
    Cluster,
    ClusterFactory,
    backed_up,
    run_dr,
)

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


def _insert(cluster: Cluster, first: int, last: int) -> None:
    # One transaction per row: each is a separate commit the target time falls between.
    with cluster.connect() as conn:
        for n in range(first, last + 1):
            conn.execute(b"INSERT INTO ledger (id) VALUES (%s)", (n,))


@pytest.mark.parametrize("repo", ["azure", "posix"])
def test_restore_to_time_keeps_exactly_the_rows_committed_before_it(
    repo: str, make_cluster_azure: ClusterFactory
) -> None:
    cluster = make_cluster_azure(f"pitr-{repo}", repos=(repo,))
    backed_up(cluster, (repo,))
    # pgBackRest picks the backup for a target by its stop time, recorded in whole seconds.
    time.sleep(1.1)
    cluster.sql(
        "CREATE TABLE ledger (id int PRIMARY KEY, at timestamptz DEFAULT clock_timestamp())"
    )
    _insert(cluster, 1, 5)
    time.sleep(0.05)
    target = cluster.value("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', "
                           "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"+00:00\"')")  # fmt: skip
    time.sleep(0.05)
    _insert(cluster, 6, 10)
    cluster.switch_and_wait_archived()
    common = ["--pgbackrest-config", cluster.env["PGBACKREST_CONFIG"],
              "--repo", str(REPO_NUMBER[repo])]  # fmt: skip

    refused = run_dr("restore", "--to-time", target, *common, env=cluster.env)
    assert refused.returncode == 1
    assert "--yes" in refused.stderr
    assert cluster.value("SELECT count(*) FROM ledger") == 10  # untouched

    result = run_dr("restore", "--to-time", target, *common, "--yes", "--json", env=cluster.env)
    assert result.returncode == 0, result.stderr + result.stdout
    report = json.loads(result.stdout)
    print(f"\nPITR from {repo}: {report}")

    ids = [r[0] for r in cluster.sql("SELECT id FROM ledger ORDER BY id")]
    assert ids == [1, 2, 3, 4, 5]
    assert report["timeline"] == 2
    assert cluster.value("SELECT pg_is_in_recovery()") is False
    cluster.sql("INSERT INTO ledger (id) VALUES (100)")  # a primary that takes writes
    assert cluster.value("SELECT count(*) FROM ledger") == 6

    assert {"restore_command", "recovery_target_time", "recovery_target_action"} <= set(
        report["removed_settings"]
    )
    auto_conf = (cluster.data / "postgresql.auto.conf").read_text()
    assert "restore_command" not in auto_conf
    assert "recovery_target" not in auto_conf
    assert cluster.value("SHOW restore_command") == ""
    assert not (cluster.data / "recovery.signal").exists()

    # The restored cluster keeps archiving into the same repository, on its new timeline.
    cluster.switch_and_wait_archived()
    cluster.pgbackrest("check")
    if repo == "azure":
        return  # the rest is about the command, not the repository type

    # A target after the last archived commit cannot be reached (PostgreSQL would refuse to
    # start): the command sees it in the archiver's statistics and refuses before it stops
    # anything, saying what restores the same data.
    now = cluster.value("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', "
                        "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")  # fmt: skip
    pid = (cluster.data / "postmaster.pid").read_text().split()[0]
    beyond = run_dr("restore", "--to-time", now, *common, "--yes", env=cluster.env)
    assert beyond.returncode == 1, beyond.stderr
    assert "recovery would end before reaching the target" in beyond.stderr
    assert "--latest" in beyond.stderr
    assert cluster.running()
    assert (cluster.data / "postmaster.pid").read_text().split()[0] == pid
    latest = run_dr("restore", "--latest", *common, "--yes", env=cluster.env)
    assert latest.returncode == 0, latest.stderr + latest.stdout
    assert "accepting writes" in latest.stdout
    assert [r[0] for r in cluster.sql("SELECT id FROM ledger ORDER BY id")] == [1, 2, 3, 4, 5, 100]


def test_repositories_are_encrypted_and_verify(
    make_cluster_azure: ClusterFactory, azurite: Azurite
) -> None:
    cluster = make_cluster_azure("crypt", repos=("azure", "posix"))
    backed_up(cluster, ("azure", "posix"))
    cluster.sql("CREATE TABLE secret (v text); INSERT INTO secret VALUES ('plain-marker')")
    cluster.switch_and_wait_archived()
    cluster.pgbackrest("check")
    verified = run_dr("verify", "--pgbackrest-config", cluster.env["PGBACKREST_CONFIG"],
                      env=cluster.env)  # fmt: skip
    assert verified.returncode == 0, verified.stderr + verified.stdout
    assert verified.stdout.count("status: ok") == 2
    assert "status: valid" in verified.stdout

    for n in (1, 2):
        raw = cluster.pgbackrest_bytes(f"--repo={n}", "--raw", "repo-get",
                                       "backup/ctafleet/backup.info")  # fmt: skip
        assert raw.startswith(b"Salted__"), f"repo{n} backup.info is not encrypted"
        # Real AES-256-CBC under the configured passphrase: OpenSSL decrypts it to the INI.
        plain = subprocess.run(
            ["openssl", "enc", "-d", "-aes-256-cbc", "-md", "sha1", "-pass", "env:PASS"],
            input=raw, capture_output=True, check=True,
            env={"PASS": cluster.env[f"PGBACKREST_REPO{n}_CIPHER_PASS"]},
        ).stdout  # fmt: skip
        assert plain.startswith(b"[backrest]")

        # The wrong passphrase reads nothing (and `dr verify` says so, unlike pgBackRest's
        # own exit code).
        wrong = {**cluster.env, f"PGBACKREST_REPO{n}_CIPHER_PASS": "not-the-passphrase"}
        failed = run_dr("verify", "--pgbackrest-config", cluster.env["PGBACKREST_CONFIG"],
                        "--repo", str(n), env=wrong)  # fmt: skip
        assert failed.returncode == 1, f"repo{n} verified with a wrong passphrase"
        assert "No usable backup.info" in failed.stdout

    # What the storage holds, read around pgBackRest: every object is ciphertext.
    assert cluster.container is not None
    names = azurite.list_blobs(cluster.container)
    assert any("/archive/" in n for n in names)
    assert any("/backup/" in n for n in names)
    for name in names:
        assert azurite.get_blob(cluster.container, name).startswith(b"Salted__"), name
    files = [p for p in (cluster.root / "pgbackrest" / "repo").rglob("*") if p.is_file()]
    assert len(files) > 10
    for path in files:
        assert path.read_bytes()[:8] == b"Salted__", path
