"""Round trips: what goes into a backup comes back out identical, compared table by table by
checksums computed in the test (not by the code under test)."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from ctafleet.db.migrate import head_revision
from tests.conftest import service_unavailable
from tests.ops.backup.conftest import (
    PROBE_ROWS,
    AgeKey,
    Azurite,
    PgSource,
    azure_cli,
    database_exists,
    leftover_databases,
    local_cli,
    pg_contents,
    pg_fetch,
    python_module_cmd,
    run_async,
    sqlite_contents,
)

pytestmark = pytest.mark.postgres
AGE_HEADER = b"age-encryption.org/v1\n"


def scratch_database(stderr: str) -> str:
    match = re.search(r"restored into (ctafleet_verify_[0-9a-f]+)", stderr)
    assert match, stderr
    return match.group(1)


def test_postgres_round_trip_through_azurite(
    pg_source: PgSource, pg_names: object, azurite: Azurite, age_key: AgeKey, tmp_path: Path
) -> None:
    cli = azure_cli(tmp_path, age_key, pg_source.owner_url, azurite)
    backup_id = cli.create()

    listed = json.loads(cli("list", "--json").stdout)
    assert [m["id"] for m in listed] == [backup_id]
    manifest = listed[0]
    assert manifest["database_kind"] == "postgresql"
    assert manifest["schema_revision"] == head_revision()
    assert manifest["tables"]["public.backup_probe"]["rows"] == PROBE_ROWS
    assert manifest["tables"]["public.vehicles"]["rows"] == 300
    assert manifest["tables"]["public.tenants"]["rows"] == 3
    assert manifest["rls_tables"] >= 10
    assert manifest["rls_policies"] == manifest["rls_tables"]
    assert manifest["recipients"] == [age_key.recipient]
    assert {"ctafleet", "pg_dump", "pyrage", "zstandard", "python"} <= set(manifest["tools"])
    assert manifest["dump_bytes"] > manifest["object"]["size"] > 0  # compressed

    # What Azure holds is age ciphertext, with the checksums the manifest records.
    container = cli.env["CTAFLEET_STORAGE__AZURE_CONTAINER"]
    blob_client = azurite.service().get_blob_client(container, manifest["object"]["key"])
    blob = blob_client.download_blob().readall()
    assert blob.startswith(AGE_HEADER)
    assert b"PGDMP" not in blob
    assert b"Transit" not in blob
    assert hashlib.sha256(blob).hexdigest() == manifest["object"]["sha256"]
    content_md5 = blob_client.get_blob_properties().content_settings.content_md5
    assert (
        bytes(content_md5).hex()
        == hashlib.md5(blob, usedforsecurity=False).hexdigest()
        == manifest["object"]["md5"]
    )

    verified = cli("verify", backup_id)
    assert verified.exit_code == 0, verified.output
    assert f"ok: backup {backup_id} restored and matches its manifest" in verified.stdout
    assert not database_exists(pg_source.server, scratch_database(verified.stderr))

    target = pg_names()  # type: ignore[operator]
    restored = cli("restore", "--latest", "--target-url", pg_source.db_url(target), "--yes")
    assert restored.exit_code == 0, restored.output
    assert pg_contents(pg_source.db_url(target)) == pg_contents(pg_source.owner_url)
    assert leftover_databases(pg_source.server, target) == []

    # Row-level security came back with the data: the application role sees nothing without
    # a tenant, and the policies are in place.
    policies = run_async(pg_fetch(pg_source.db_url(target), "SELECT count(*) AS n FROM pg_policy"))[
        0
    ]["n"]
    assert policies == manifest["rls_policies"]

    # A backup of the restore measures the same contents as the original's manifest.
    again = cli.create(CTAFLEET_DATABASE__URL=pg_source.db_url(target))
    second = json.loads(cli("list", "--json").stdout)
    assert second[0]["id"] == again
    assert second[0]["tables"] == manifest["tables"]


def test_postgres_round_trip_local_directory_parallel_restore(
    pg_source: PgSource, pg_names: object, age_key: AgeKey, tmp_path: Path
) -> None:
    cli = local_cli(tmp_path, age_key, pg_source.owner_url)
    backup_id = cli.create()
    stored = [p.name for p in (tmp_path / "objects" / "backups").iterdir()]
    assert sorted(name for name in stored if not name.startswith(".")) == [
        f"{backup_id}.manifest.json",
        f"{backup_id}.pgdump.zst.age",
    ]
    assert (tmp_path / "objects" / "backups" / f"{backup_id}.pgdump.zst.age").read_bytes()[
        : len(AGE_HEADER)
    ] == AGE_HEADER

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    target = pg_names()  # type: ignore[operator]
    restored = cli(
        "restore",
        backup_id,
        "--target-url",
        pg_source.db_url(target),
        "--jobs",
        "2",
        "--scratch-dir",
        str(scratch),
    )
    assert restored.exit_code == 0, restored.output
    assert pg_contents(pg_source.db_url(target)) == pg_contents(pg_source.owner_url)
    assert list(scratch.iterdir()) == []  # the decrypted dump is gone

    # verify on an explicitly named scratch server
    verified = cli("verify", backup_id, "--scratch-url", pg_source.server.admin_url)
    assert verified.exit_code == 0, verified.output


def test_sqlite_round_trip_local_directory(
    sqlite_source: Path, age_key: AgeKey, tmp_path: Path
) -> None:
    cli = local_cli(tmp_path, age_key, f"sqlite:///{sqlite_source}")
    backup_id = cli.create()
    manifest = json.loads(cli("list", "--json").stdout)[0]
    assert manifest["database_kind"] == "sqlite"
    assert manifest["schema_revision"] == head_revision()
    assert manifest["tables"]["backup_probe"]["rows"] == PROBE_ROWS
    assert manifest["tables"]["tenants"]["rows"] == 1

    verified = cli("verify", "--latest")
    assert verified.exit_code == 0, verified.output

    target = tmp_path / "restored" / "fleet.db"
    restored = cli("restore", backup_id, "--target-url", f"sqlite:///{target}")
    assert restored.exit_code == 0, restored.output
    assert sqlite_contents(target) == sqlite_contents(sqlite_source)
    assert sorted(p.name for p in target.parent.iterdir()) == ["fleet.db"]


def test_sqlite_round_trip_through_azurite(
    sqlite_source: Path, azurite: Azurite, age_key: AgeKey, tmp_path: Path
) -> None:
    cli = azure_cli(tmp_path, age_key, f"sqlite+aiosqlite:///{sqlite_source}", azurite)
    backup_id = cli.create()
    target = tmp_path / "restored.db"
    restored = cli("restore", backup_id, "--target-url", f"sqlite+aiosqlite:///{target}")
    assert restored.exit_code == 0, restored.output
    assert sqlite_contents(target) == sqlite_contents(sqlite_source)


def test_command_line_contract_in_a_separate_process(
    pg_source: PgSource, pg_names: object, age_key: AgeKey, tmp_path: Path
) -> None:
    """What `ctafleet dr` and scripts rely on: the id on stdout's last line, `list --json`,
    and a restore that never waits for a terminal."""
    env = {**local_cli(tmp_path, age_key, pg_source.owner_url).env, "PATH": "/usr/bin:/bin"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            python_module_cmd(*args),
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    created = run("create")
    assert created.returncode == 0, created.stderr
    backup_id = created.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{6}", backup_id)
    listed = run("list", "--json")
    assert [m["id"] for m in json.loads(listed.stdout)] == [backup_id]

    target = pg_names()  # type: ignore[operator]
    first = run("restore", "--latest", "--target-url", pg_source.db_url(target), "--yes")
    assert first.returncode == 0, first.stderr
    # The target is now not empty: refused without --force, and with --force but without
    # --yes there is no terminal to ask, so it refuses rather than waits.
    refused = run("restore", "--latest", "--target-url", pg_source.db_url(target))
    assert refused.returncode == 3
    assert "not empty" in refused.stderr
    assert "--force" in refused.stderr
    unconfirmed = run("restore", "--latest", "--target-url", pg_source.db_url(target), "--force")
    assert unconfirmed.returncode == 3
    assert "--yes" in unconfirmed.stderr
    replaced = run(
        "restore", backup_id, "--target-url", pg_source.db_url(target), "--force", "--yes"
    )
    assert replaced.returncode == 0, replaced.stderr
    assert pg_contents(pg_source.db_url(target)) == pg_contents(pg_source.owner_url)


def test_restore_force_replaces_changed_data(
    pg_source: PgSource, age_key: AgeKey, tmp_path: Path
) -> None:
    """--force brings a database that changed after the backup back to the backed-up state."""
    cli = local_cli(tmp_path, age_key, pg_source.owner_url)
    backup_id = cli.create()
    before = pg_contents(pg_source.owner_url)
    run_async(pg_source.server.execute("DELETE FROM backup_probe", database=pg_source.name))
    assert pg_contents(pg_source.owner_url) != before

    refused = cli("restore", backup_id, "--target-url", pg_source.owner_url)
    assert refused.exit_code == 3
    assert "not empty" in refused.stderr
    restored = cli("restore", backup_id, "--target-url", pg_source.owner_url, "--force", "--yes")
    assert restored.exit_code == 0, restored.output
    assert pg_contents(pg_source.owner_url) == before
    assert leftover_databases(pg_source.server, pg_source.name) == []


def test_break_glass_decrypt_with_the_age_and_zstd_tools(
    pg_source: PgSource, age_key: AgeKey, tmp_path: Path
) -> None:
    """A backup is standard age + zstd + pg_dump: readable without CTAFleet."""
    for tool in ("age", "zstd", "pg_restore"):
        if shutil.which(tool) is None:
            service_unavailable(f"{tool} is not installed (scripts/install-backup-tools.sh)")
    cli = local_cli(tmp_path, age_key, pg_source.owner_url)
    backup_id = cli.create()
    obj = tmp_path / "objects" / "backups" / f"{backup_id}.pgdump.zst.age"
    # Step by step, as the documented procedure: each tool must succeed on its own.
    plain = tmp_path / "backup.dump"
    subprocess.run(
        ["age", "-d", "-i", str(age_key.identity_file), "-o", str(tmp_path / "backup.zst"),
         str(obj)],
        check=True, timeout=60,
    )  # fmt: skip
    subprocess.run(
        ["zstd", "-q", "-d", str(tmp_path / "backup.zst"), "-o", str(plain)],
        check=True,
        timeout=60,
    )
    listing = subprocess.run(
        ["pg_restore", "--list", str(plain)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "TABLE DATA public backup_probe" in listing
    assert "POLICY public tenants tenant_isolation" in listing
