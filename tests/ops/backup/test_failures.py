"""Failures: each ends with a clear error and a non-zero exit, and leaves no partial restore,
no temporary database or file, and no half-stored backup behind."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from pathlib import Path

import pytest
from azure.storage.blob import (
    AccountSasPermissions,
    BlobBlock,
    ContentSettings,
    ResourceTypes,
    generate_account_sas,
)

from ctafleet.storage import LocalStore
from tests.ops.backup.conftest import (
    AZURITE_KEY,
    AgeKey,
    Azurite,
    PgSource,
    azure_cli,
    database_exists,
    leftover_databases,
    local_cli,
    make_key,
    pg_contents,
    run_async,
    sqlite_contents,
)

pytestmark = pytest.mark.postgres


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset % len(data)] ^= 0x01
    path.write_bytes(bytes(data))


def object_path(tmp_path: Path, backup_id: str, kind: str = "pgdump") -> Path:
    return tmp_path / "objects" / "backups" / f"{backup_id}.{kind}.zst.age"


@pytest.mark.parametrize("offset", [30, 200_000, -1], ids=["header", "middle", "last-byte"])
def test_tampered_object_is_refused_by_verify_and_restore(
    pg_source: PgSource, pg_names: object, age_key: AgeKey, tmp_path: Path, offset: int
) -> None:
    cli = local_cli(tmp_path, age_key, pg_source.owner_url)
    backup_id = cli.create()
    flip_byte(object_path(tmp_path, backup_id), offset)

    verified = cli("verify", backup_id)
    assert verified.exit_code == 4, verified.output
    assert "checksum mismatch" in verified.stderr
    assert "altered or corrupted" in verified.stderr

    target = pg_names()  # type: ignore[operator]
    restored = cli("restore", backup_id, "--target-url", pg_source.db_url(target), "--yes")
    assert restored.exit_code == 4, restored.output
    assert "checksum mismatch" in restored.stderr
    assert not database_exists(pg_source.server, target)
    assert leftover_databases(pg_source.server, target) == []


def test_tampered_blob_with_its_metadata_kept_is_refused(
    pg_source: PgSource, pg_names: object, azurite: Azurite, age_key: AgeKey, tmp_path: Path
) -> None:
    """An attacker who rewrites the blob and copies its recorded checksums along."""
    cli = azure_cli(tmp_path, age_key, pg_source.owner_url, azurite)
    backup_id = cli.create()
    manifest = json.loads(cli("list", "--json").stdout)[0]
    container = cli.env["CTAFLEET_STORAGE__AZURE_CONTAINER"]
    blob = azurite.service().get_blob_client(container, manifest["object"]["key"])
    props = blob.get_blob_properties()
    data = bytearray(blob.download_blob().readall())
    data[len(data) // 2] ^= 0x40
    # Block upload + commit: the service stores the Content-MD5 given at commit as is.
    blob.stage_block("YmxvY2sx", bytes(data))
    blob.commit_block_list(
        [BlobBlock(block_id="YmxvY2sx")],
        metadata=props.metadata,
        content_settings=ContentSettings(
            content_type=props.content_settings.content_type,
            content_md5=props.content_settings.content_md5,
        ),
    )
    assert blob.get_blob_properties().content_settings.content_md5 == (
        props.content_settings.content_md5
    )
    target = pg_names()  # type: ignore[operator]
    for args in (
        ("verify", backup_id),
        ("restore", backup_id, "--target-url", pg_source.db_url(target), "--yes"),
    ):
        result = cli(*args)
        assert result.exit_code == 4, result.output
        assert "checksum mismatch" in result.stderr
    assert not database_exists(pg_source.server, target)


def test_manifest_that_disagrees_with_the_data_fails_verify(
    sqlite_source: Path, age_key: AgeKey, tmp_path: Path
) -> None:
    """A restore that does not match the manifest's counts is a failure, not a warning."""
    cli = local_cli(tmp_path, age_key, f"sqlite:///{sqlite_source}")
    backup_id = cli.create()
    store = LocalStore(tmp_path / "objects")
    key = f"backups/{backup_id}.manifest.json"
    manifest = json.loads(store.get_bytes(key))
    manifest["tables"]["backup_probe"]["rows"] += 1
    store.put_bytes(key, json.dumps(manifest).encode(), overwrite=True)

    verified = cli("verify", backup_id)
    assert verified.exit_code == 4, verified.output
    assert "table backup_probe: 2500 rows restored, 2501 backed up" in verified.stderr

    target = tmp_path / "restored.db"
    restored = cli("restore", backup_id, "--target-url", f"sqlite:///{target}")
    assert restored.exit_code == 4
    assert not target.exists()
    assert [p.name for p in tmp_path.glob(".restored.db*")] == []


def test_wrong_key_is_a_clear_error(sqlite_source: Path, age_key: AgeKey, tmp_path: Path) -> None:
    cli = local_cli(tmp_path, age_key, f"sqlite:///{sqlite_source}")
    backup_id = cli.create()
    other = make_key(tmp_path, "other-key.txt")

    wrong = cli("verify", backup_id, "--identity", str(other.identity_file))
    assert wrong.exit_code == 1
    assert f"encrypted to {age_key.recipient}" in wrong.stderr
    assert f"private key of {other.recipient}" in wrong.stderr

    target = tmp_path / "restored.db"
    restored = cli(
        "restore", backup_id, "--target-url", f"sqlite:///{target}", "--identity",
        str(other.identity_file),
    )  # fmt: skip
    assert restored.exit_code == 1
    assert "encrypted to" in restored.stderr
    assert not target.exists()

    not_a_key = tmp_path / "not-a-key.txt"
    not_a_key.write_text("hello\n")
    bad = cli("verify", backup_id, "--identity", str(not_a_key))
    assert bad.exit_code == 2
    assert "line 1: not an age identity" in bad.stderr

    missing = cli("verify", backup_id, CTAFLEET_BACKUP__IDENTITY_FILE="")
    assert missing.exit_code == 2
    assert "no private key" in missing.stderr


def test_private_key_in_place_of_the_recipient_is_refused(
    sqlite_source: Path, age_key: AgeKey, tmp_path: Path
) -> None:
    cli = local_cli(tmp_path, age_key, f"sqlite:///{sqlite_source}")
    secret = age_key.identity_file.read_text().splitlines()[-1]
    result = cli("create", CTAFLEET_BACKUP__AGE_RECIPIENT=secret)
    assert result.exit_code == 2
    assert "PRIVATE key" in result.stderr
    assert secret not in result.output


def test_missing_container(
    sqlite_source: Path, azurite: Azurite, age_key: AgeKey, tmp_path: Path
) -> None:
    cli = azure_cli(tmp_path, age_key, f"sqlite:///{sqlite_source}", azurite)
    for args in (("create",), ("list",), ("verify", "--latest")):
        result = cli(*args, CTAFLEET_STORAGE__AZURE_CONTAINER="no-such-container")
        assert result.exit_code == 1, result.output
        assert "container 'no-such-container' does not exist" in result.stderr


@pytest.mark.parametrize("credential", ["wrong-account-key", "expired-sas"])
def test_bad_or_expired_credentials(
    sqlite_source: Path, azurite: Azurite, age_key: AgeKey, tmp_path: Path, credential: str
) -> None:
    cli = azure_cli(tmp_path, age_key, f"sqlite:///{sqlite_source}", azurite)
    backup_id = cli.create()
    if credential == "wrong-account-key":
        connection_string = azurite.connection_string(key="A" * 86 + "==")
    else:
        now = dt.datetime.now(dt.UTC)
        sas = generate_account_sas(
            "devstoreaccount1",
            AZURITE_KEY,
            resource_types=ResourceTypes(service=True, container=True, object=True),
            permission=AccountSasPermissions(read=True, write=True, list=True, delete=True),
            start=now - dt.timedelta(hours=2),
            expiry=now - dt.timedelta(hours=1),
        )
        connection_string = f"BlobEndpoint={azurite.endpoint};SharedAccessSignature={sas}"
    target = tmp_path / "restored.db"
    for args in (
        ("create",),
        ("list",),
        ("restore", backup_id, "--target-url", f"sqlite:///{target}"),
    ):
        result = cli(*args, CTAFLEET_STORAGE__AZURE_CONNECTION_STRING=connection_string)
        assert result.exit_code == 1, result.output
        assert "refused the credentials" in result.stderr
        assert "AccountKey" not in result.output
        assert "sig=" not in result.output
    assert not target.exists()
    # Nothing new was stored by the refused create.
    listed = json.loads(cli("list", "--json").stdout)
    assert [m["id"] for m in listed] == [backup_id]


def test_full_scratch_disk_during_parallel_restore(
    pg_source: PgSource, pg_names: object, age_key: AgeKey, tmp_path: Path, tiny_disk: Path
) -> None:
    cli = local_cli(tmp_path, age_key, pg_source.owner_url)
    backup_id = cli.create()
    target = pg_names()  # type: ignore[operator]
    result = cli(
        "restore", backup_id, "--target-url", pg_source.db_url(target), "--jobs", "2",
        "--scratch-dir", str(tiny_disk),
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    assert f"no space left in {tiny_disk}" in result.stderr
    assert not database_exists(pg_source.server, target)
    assert leftover_databases(pg_source.server, target) == []
    assert list(tiny_disk.iterdir()) == []


def test_full_disk_at_the_sqlite_target_keeps_the_old_database(
    sqlite_source: Path, age_key: AgeKey, tmp_path: Path, tiny_disk: Path
) -> None:
    cli = local_cli(tmp_path, age_key, f"sqlite:///{sqlite_source}")
    backup_id = cli.create()
    target = tiny_disk / "fleet.db"
    conn = sqlite3.connect(target)
    with conn:
        conn.execute("CREATE TABLE existing (id INTEGER PRIMARY KEY, note TEXT)")
        conn.execute("INSERT INTO existing (note) VALUES ('still here')")
    conn.close()
    before = sqlite_contents(target)

    result = cli("restore", backup_id, "--target-url", f"sqlite:///{target}", "--force", "--yes")
    assert result.exit_code == 1, result.output
    assert f"no space left in {tiny_disk}" in result.stderr
    assert sqlite_contents(target) == before
    assert sorted(p.name for p in tiny_disk.iterdir()) == ["fleet.db"]


def test_full_scratch_disk_during_sqlite_create_and_verify(
    sqlite_source: Path, age_key: AgeKey, tmp_path: Path, tiny_disk: Path
) -> None:
    cli = local_cli(tmp_path, age_key, f"sqlite:///{sqlite_source}")
    created = cli("create", "--scratch-dir", str(tiny_disk))
    assert created.exit_code == 1, created.output
    assert f"no space left in {tiny_disk}" in created.stderr
    assert list(tiny_disk.iterdir()) == []
    assert list(LocalStore(tmp_path / "objects").list()) == []

    backup_id = cli.create()
    verified = cli("verify", backup_id, "--scratch-dir", str(tiny_disk))
    assert verified.exit_code == 1, verified.output
    assert f"no space left in {tiny_disk}" in verified.stderr
    assert list(tiny_disk.iterdir()) == []


def test_failed_dump_stores_nothing(pg_source: PgSource, age_key: AgeKey, tmp_path: Path) -> None:
    """pg_dump fails part-way (a table the backup role may not read): no object is kept."""
    run_async(
        pg_source.server.execute(
            "CREATE TABLE zz_private (id int)",
            "INSERT INTO zz_private VALUES (1)",
            database=pg_source.name,
        )
    )
    cli = local_cli(tmp_path, age_key, pg_source.app_url)
    result = cli("create")
    assert result.exit_code == 1, result.output
    assert "permission denied" in result.stderr
    assert list(LocalStore(tmp_path / "objects").list()) == []


def test_non_empty_postgres_target_is_refused_and_untouched(
    pg_source: PgSource, age_key: AgeKey, tmp_path: Path
) -> None:
    cli = local_cli(tmp_path, age_key, pg_source.owner_url)
    backup_id = cli.create()
    run_async(pg_source.server.execute("DELETE FROM vehicles", database=pg_source.name))
    before = pg_contents(pg_source.owner_url)
    result = cli("restore", backup_id, "--target-url", pg_source.owner_url, "--yes")
    assert result.exit_code == 3
    assert "is not empty" in result.stderr
    assert pg_contents(pg_source.owner_url) == before


def test_backup_kind_must_match_the_target(
    sqlite_source: Path, pg_source: PgSource, age_key: AgeKey, tmp_path: Path
) -> None:
    cli = local_cli(tmp_path, age_key, f"sqlite:///{sqlite_source}")
    backup_id = cli.create()
    result = cli("restore", backup_id, "--target-url", pg_source.db_url("ctafleet_never_made"))
    assert result.exit_code == 2
    assert "is a sqlite backup; the target is postgresql" in result.stderr
    unknown = cli("restore", "20200101T000000Z-abcdef", "--target-url", "sqlite:///x.db")
    assert unknown.exit_code == 1
    assert "no backup 20200101T000000Z-abcdef" in unknown.stderr
