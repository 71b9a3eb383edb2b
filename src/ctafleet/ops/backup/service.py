"""Logical backups: create, list, verify, restore, prune.

Storage layout under the prefix (`backups/` by default), one pair per backup:

    <id>.pgdump.zst.age | <id>.sqlite.zst.age   the dump, zstd-compressed, age-encrypted
    <id>.manifest.json                           written last: the backup is complete

Restores never write into the target until the whole backup has been downloaded, its SHA-256
checked, decrypted, restored *somewhere else* and found identical to the manifest (row counts
and per-table content checksums): PostgreSQL restores into a temporary database on the target
server, then swaps it in by renaming; SQLite restores into a temporary file next to the
target, then renames it over. A failure at any step leaves the target as it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import platform
import re
import secrets
import socket
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import IO, Any, BinaryIO, cast

from pydantic import ValidationError
from pyrage import x25519

from ctafleet import __version__
from ctafleet.config import Settings, is_sqlite_url
from ctafleet.kernel.clock import Clock, SystemClock
from ctafleet.ops.backup import crypto, postgres, retention, sqlite
from ctafleet.ops.backup.errors import (
    BackupError,
    ConfigurationError,
    IntegrityFailure,
    TargetNotEmptyError,
    WrongKeyError,
)
from ctafleet.ops.backup.manifest import (
    MANIFEST_SUFFIX,
    DatabaseStats,
    Manifest,
    StoredObject,
    differences,
)
from ctafleet.ops.backup.pipeline import EncryptingReader, decrypt_into
from ctafleet.storage import (
    IntegrityError,
    ObjectInfo,
    ObjectNotFoundError,
    ObjectReader,
    ObjectStore,
    StorageError,
)

ID_PATTERN = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{6}$")
EXTENSIONS = {"postgresql": ".pgdump.zst.age", "sqlite": ".sqlite.zst.age"}
# An object without a manifest younger than this may belong to a backup still running.
ORPHAN_GRACE = timedelta(days=1)


def new_id(when: datetime) -> str:
    return f"{when.astimezone(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def _package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"


def _describe(problems: Sequence[str]) -> str:
    return "\n  - " + "\n  - ".join(problems)


@dataclass
class RestoreReport:
    backup_id: str
    target: str
    tables: int
    rows: int
    seconds: float
    warnings: list[str] = field(default_factory=list)


@dataclass
class PruneReport:
    kept: list[str]
    deleted: list[str]
    orphans_deleted: list[str]
    errors: list[str]


class Backups:
    """The logical backups of one installation, in its object store."""

    def __init__(
        self,
        settings: Settings,
        store: ObjectStore,
        *,
        clock: Clock | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock or SystemClock()
        self.progress = progress or (lambda _message: None)
        self.prefix = settings.backup.prefix

    # --- keys and manifests --------------------------------------------------------------

    def manifest_key(self, backup_id: str) -> str:
        return f"{self.prefix}{backup_id}{MANIFEST_SUFFIX}"

    def data_key(self, backup_id: str, kind: str) -> str:
        return f"{self.prefix}{backup_id}{EXTENSIONS[kind]}"

    @contextlib.contextmanager
    def _storage(self) -> Iterator[None]:
        try:
            yield
        except IntegrityError as exc:
            raise IntegrityFailure(str(exc)) from None
        except StorageError as exc:
            raise BackupError(str(exc)) from None

    def _load_manifest(self, key: str) -> Manifest:
        with self._storage():
            data = self.store.get_bytes(key)
        try:
            return Manifest.model_validate_json(data)
        except ValidationError as exc:
            raise IntegrityFailure(
                f"{key} is not a valid backup manifest ({exc.error_count()} problems)"
            ) from None

    def manifests(self, warnings: list[str] | None = None) -> list[Manifest]:
        """Complete backups, newest first."""
        manifests = []
        with self._storage():
            keys = [i.key for i in self.store.list(self.prefix) if i.key.endswith(MANIFEST_SUFFIX)]
        for key in keys:
            try:
                manifests.append(self._load_manifest(key))
            except BackupError as exc:
                if warnings is None:
                    raise
                warnings.append(str(exc))
        return sorted(manifests, key=lambda m: m.started_at, reverse=True)

    def resolve(self, backup_id: str | None, *, latest: bool) -> Manifest:
        if bool(backup_id) == latest:
            raise ConfigurationError("name exactly one backup: a BACKUP_ID or --latest")
        if backup_id:
            if not ID_PATTERN.match(backup_id):
                raise ConfigurationError(
                    f"{backup_id!r} is not a backup id (like 20260101T020000Z-1a2b3c)"
                )
            try:
                return self._load_manifest(self.manifest_key(backup_id))
            except BackupError as exc:
                if "not found" in str(exc):
                    raise BackupError(
                        f"no backup {backup_id} in {self.store.description}"
                    ) from None
                raise
        manifests = self.manifests(warnings=[])
        if not manifests:
            raise BackupError(f"no backups in {self.store.description} under {self.prefix!r}")
        return manifests[0]

    # --- create --------------------------------------------------------------------------

    async def create(
        self, database_url: str | None = None, *, scratch_dir: str | None = None
    ) -> Manifest:
        settings = self.settings.backup
        url = database_url or self.settings.database_admin_url
        recipients = crypto.parse_recipients(settings.age_recipient)
        started = self.clock.now()
        began = time.monotonic()
        backup_id = new_id(started)
        with self._storage():
            self.store.check()
        kind = "sqlite" if is_sqlite_url(url) else "postgresql"
        key = self.data_key(backup_id, kind)
        metadata = {"backup_id": backup_id, "database_kind": kind}

        def upload(source: IO[bytes], done: Callable[[], None] | None) -> tuple[ObjectInfo, int]:
            reader = EncryptingReader(
                source,  # type: ignore[arg-type]
                recipients,
                level=settings.compression_level,
                source_done=done,
            )
            try:
                info = self.store.put(key, reader, metadata=metadata)  # type: ignore[arg-type]
            finally:
                reader.close()
            return info, reader.plain_bytes

        tools = {
            "ctafleet": __version__,
            "python": platform.python_version(),
            "pyrage": _package_version("pyrage"),
            "zstandard": _package_version("zstandard"),
        }
        server_version: str | None = None
        self.progress(f"backup {backup_id}: {kind} database to {self.store.description}")
        try:
            with self._storage():
                if kind == "postgresql":
                    server = postgres.PgServer.from_url(url)
                    result = await postgres.dump(server, upload, bin_dir=settings.pg_bin_dir)
                    stats, (info, plain_bytes) = result.stats, result.upload
                    server_version, database_name = result.server_version, result.database_name
                    database_bytes = result.database_bytes
                    tools.update(result.tools)
                else:
                    path = sqlite.path_of(url)
                    stats, (info, plain_bytes), database_bytes = await asyncio.to_thread(
                        self._sqlite_dump, path, upload, scratch_dir or settings.scratch_dir
                    )
                    database_name = path.name
                    tools["sqlite"] = sqlite.sqlite_version()
                finished = self.clock.now()
                manifest = Manifest(
                    id=backup_id,
                    database_kind=kind,
                    database_name=database_name,
                    server_version=server_version,
                    schema_revision=stats.schema_revision,
                    started_at=started,
                    finished_at=finished,
                    duration_seconds=round(time.monotonic() - began, 3),
                    object=StoredObject(
                        key=key, size=info.size, sha256=info.sha256 or "", md5=info.md5 or ""
                    ),
                    dump_bytes=plain_bytes,
                    database_bytes=database_bytes,
                    compression_level=settings.compression_level,
                    recipients=[str(r) for r in recipients],
                    tables=stats.tables,
                    rls_tables=stats.rls_tables,
                    rls_policies=stats.rls_policies,
                    tools=tools,
                    host=socket.gethostname(),
                )
                self.store.put_bytes(
                    self.manifest_key(backup_id),
                    manifest.model_dump_json(indent=2).encode(),
                    content_type="application/json",
                    metadata=metadata,
                )
        except BaseException:
            # An object without a manifest is ignored by restore; removing it now keeps the
            # store tidy (prune would remove it after a day otherwise).
            with contextlib.suppress(Exception):
                self.store.delete(key)
            raise
        self.progress(
            f"backup {backup_id}: {len(manifest.tables)} tables, {manifest.total_rows} rows, "
            f"{manifest.object.size} bytes stored in {manifest.duration_seconds:.1f} s"
        )
        return manifest

    def _sqlite_dump(
        self,
        path: Path,
        upload: Callable[[IO[bytes], None], tuple[ObjectInfo, int]],
        scratch_dir: str,
    ) -> tuple[DatabaseStats, tuple[ObjectInfo, int], int]:
        scratch = self._scratch(scratch_dir)
        try:
            with tempfile.TemporaryDirectory(dir=scratch, prefix="ctafleet-backup-") as tmp:
                copy = Path(tmp) / "snapshot.sqlite"
                sqlite.snapshot(path, copy)
                problems = sqlite.sanity_problems(copy)
                if problems:
                    raise BackupError(f"{path} fails its integrity check:{_describe(problems)}")
                stats = sqlite.collect_stats(copy)
                with open(copy, "rb") as source:
                    uploaded = upload(source, None)
                return stats, uploaded, copy.stat().st_size
        except OSError as exc:
            raise self._disk_error(exc, scratch) from None

    @staticmethod
    def _scratch(scratch_dir: str | None) -> Path:
        path = Path(scratch_dir) if scratch_dir else Path(tempfile.gettempdir())
        if not path.is_dir():
            raise ConfigurationError(f"scratch directory {path} does not exist")
        return path

    @staticmethod
    def _disk_error(exc: OSError, where: Path, needed: int | None = None) -> BackupError:
        if exc.errno == errno.ENOSPC:
            need = f" (this backup needs about {needed} bytes there)" if needed else ""
            return BackupError(f"no space left in {where}{need}")
        return BackupError(f"{where}: {exc.strerror or exc}")

    # --- reading a backup back -----------------------------------------------------------

    @staticmethod
    def check_key(manifest: Manifest, identities: Sequence[x25519.Identity]) -> None:
        mine = crypto.public_keys(identities)
        if not set(mine) & set(manifest.recipients):
            raise WrongKeyError(
                f"backup {manifest.id} is encrypted to {', '.join(manifest.recipients)}, but the "
                f"identity file holds the private key of {', '.join(mine)}: use the private "
                "key that matches one of the backup's recipients"
            )

    def _verify_object(self, reader: ObjectReader, manifest: Manifest) -> None:
        with self._storage():
            reader.verify(sha256=manifest.object.sha256, size=manifest.object.size)

    def _decrypt(
        self,
        reader: ObjectReader,
        sink: BinaryIO,
        identities: Sequence[x25519.Identity],
        manifest: Manifest,
    ) -> int:
        """Decrypt the backup into `sink`, then insist the stored object was intact."""
        try:
            written = decrypt_into(cast(BinaryIO, reader), sink, identities)
        except (crypto.DecryptionFailedError, WrongKeyError) as exc:
            # A damaged object explains the failure better than the cipher's complaint.
            self._verify_object(reader, manifest)
            if isinstance(exc, WrongKeyError):
                raise
            raise IntegrityFailure(
                f"backup {manifest.id} does not decrypt although its checksum matches the "
                f"manifest ({exc}): it was stored corrupt, or object and manifest were replaced"
            ) from None
        self._verify_object(reader, manifest)
        if written != manifest.dump_bytes:
            raise IntegrityFailure(
                f"backup {manifest.id} decrypts to {written} bytes; the manifest says "
                f"{manifest.dump_bytes}"
            )
        return written

    def _open(self, manifest: Manifest) -> ObjectReader:
        with self._storage():
            try:
                return self.store.get(manifest.object.key)
            except ObjectNotFoundError:
                raise BackupError(
                    f"backup {manifest.id}: its manifest exists but the object "
                    f"{manifest.object.key} is missing from {self.store.description}"
                ) from None

    async def _restore_postgres(
        self,
        manifest: Manifest,
        server: postgres.PgServer,
        dbname: str,
        identities: Sequence[x25519.Identity],
        *,
        jobs: int,
        no_owner: bool,
        scratch_dir: str | None,
    ) -> list[str]:
        """Restore into the existing empty database `dbname`; the differences from the
        manifest and the failed sanity checks (empty: a faithful restore)."""
        bin_dir = self.settings.backup.pg_bin_dir
        reader = self._open(manifest)
        try:
            if jobs > 1:
                scratch = self._scratch(scratch_dir or self.settings.backup.scratch_dir)
                await asyncio.to_thread(
                    self._restore_postgres_parallel,
                    manifest,
                    reader,
                    identities,
                    server,
                    dbname,
                    scratch,
                    jobs,
                    no_owner,
                )
            else:
                await asyncio.to_thread(
                    postgres.restore_from_stream,
                    server,
                    dbname,
                    lambda sink: self._decrypt(reader, sink, identities, manifest),  # type: ignore[arg-type]
                    no_owner=no_owner,
                    bin_dir=bin_dir,
                )
        finally:
            reader.close()
        self.progress(f"backup {manifest.id}: restored into {dbname}, comparing with the manifest")
        conn = await server.connect(dbname)
        try:
            stats = await postgres.collect_stats(conn)
            problems = await postgres.sanity_problems(conn)
        finally:
            await conn.close()
        return differences(manifest, stats) + problems

    def _restore_postgres_parallel(
        self,
        manifest: Manifest,
        reader: ObjectReader,
        identities: Sequence[x25519.Identity],
        server: postgres.PgServer,
        dbname: str,
        scratch: Path,
        jobs: int,
        no_owner: bool,
    ) -> None:
        # pg_restore --jobs needs a seekable file: the decrypted dump goes to scratch first.
        try:
            with tempfile.TemporaryDirectory(dir=scratch, prefix="ctafleet-restore-") as tmp:
                path = Path(tmp) / "dump"
                with open(path, "wb") as out:
                    self._decrypt(reader, out, identities, manifest)
                postgres.restore_from_file(
                    server,
                    dbname,
                    path,
                    jobs=jobs,
                    no_owner=no_owner,
                    bin_dir=self.settings.backup.pg_bin_dir,
                )
        except OSError as exc:
            raise self._disk_error(exc, scratch, manifest.dump_bytes) from None

    def _restore_sqlite_file(
        self, manifest: Manifest, path: Path, identities: Sequence[x25519.Identity]
    ) -> list[str]:
        reader = self._open(manifest)
        try:
            with open(path, "xb") as out:
                self._decrypt(reader, out, identities, manifest)
                out.flush()
                os.fsync(out.fileno())
        except OSError as exc:
            raise self._disk_error(exc, path.parent, manifest.dump_bytes) from None
        finally:
            reader.close()
        problems = sqlite.sanity_problems(path)
        if problems:
            return problems
        return differences(manifest, sqlite.collect_stats(path))

    # --- verify --------------------------------------------------------------------------

    async def verify(
        self,
        manifest: Manifest,
        identities: Sequence[x25519.Identity],
        *,
        scratch_url: str | None = None,
        scratch_dir: str | None = None,
    ) -> RestoreReport:
        """Restore into a scratch database, compare with the manifest, drop the scratch."""
        self.check_key(manifest, identities)
        began = time.monotonic()
        self.progress(f"backup {manifest.id}: verifying (download, decrypt, restore, compare)")
        if manifest.database_kind == "postgresql":
            url = (
                scratch_url
                or self.settings.backup.scratch_database_url
                or self.settings.database_admin_url
            )
            if is_sqlite_url(url):
                raise ConfigurationError(
                    "verifying a PostgreSQL backup needs a PostgreSQL server for the scratch "
                    "database: pass --scratch-url or set CTAFLEET_BACKUP__SCRATCH_DATABASE_URL"
                )
            server = postgres.PgServer.from_url(url)
            name = f"ctafleet_verify_{secrets.token_hex(4)}"
            target = server.with_database(name).display
            admin = await server.connect_maintenance()
            try:
                await postgres.create_database(admin, name, owner=None)
                try:
                    # Ownership and grants name roles the scratch server may not have; the
                    # contents are what is being verified.
                    problems = await self._restore_postgres(
                        manifest,
                        server,
                        name,
                        identities,
                        jobs=1,
                        no_owner=True,
                        scratch_dir=scratch_dir,
                    )
                finally:
                    await postgres.drop_database(admin, name)
            finally:
                await admin.close()
        else:
            scratch = self._scratch(scratch_dir or self.settings.backup.scratch_dir)
            with tempfile.TemporaryDirectory(dir=scratch, prefix="ctafleet-verify-") as tmp:
                path = Path(tmp) / "restored.sqlite"
                target = str(path)
                problems = await asyncio.to_thread(
                    self._restore_sqlite_file, manifest, path, identities
                )
        if problems:
            raise IntegrityFailure(
                f"backup {manifest.id} does not restore to what was backed up:{_describe(problems)}"
            )
        return RestoreReport(
            backup_id=manifest.id,
            target=target,
            tables=len(manifest.tables),
            rows=manifest.total_rows,
            seconds=round(time.monotonic() - began, 3),
        )

    # --- restore -------------------------------------------------------------------------

    async def restore(
        self,
        manifest: Manifest,
        target_url: str,
        identities: Sequence[x25519.Identity],
        *,
        force: bool = False,
        confirm: Callable[[str], bool] = lambda _question: True,
        jobs: int = 1,
        no_owner: bool = False,
        scratch_dir: str | None = None,
    ) -> RestoreReport:
        self.check_key(manifest, identities)
        target_kind = "sqlite" if is_sqlite_url(target_url) else "postgresql"
        if target_kind != manifest.database_kind:
            raise ConfigurationError(
                f"backup {manifest.id} is a {manifest.database_kind} backup; the target is "
                f"{target_kind}"
            )
        began = time.monotonic()
        warnings: list[str] = []
        if target_kind == "postgresql":
            target = await self._restore_into_postgres(
                manifest,
                target_url,
                identities,
                force=force,
                confirm=confirm,
                jobs=jobs,
                no_owner=no_owner,
                scratch_dir=scratch_dir,
                warnings=warnings,
            )
        else:
            target = await self._restore_into_sqlite(
                manifest, target_url, identities, force=force, confirm=confirm
            )
        return RestoreReport(
            backup_id=manifest.id,
            target=target,
            tables=len(manifest.tables),
            rows=manifest.total_rows,
            seconds=round(time.monotonic() - began, 3),
            warnings=warnings,
        )

    @staticmethod
    def _refuse_or_confirm(
        what: str, count: int, manifest: Manifest, force: bool, confirm: Callable[[str], bool]
    ) -> None:
        if not count:
            return
        if not force:
            raise TargetNotEmptyError(
                f"target {what} is not empty ({count} tables or other objects): pass --force "
                "to replace it"
            )
        if not confirm(f"Replace {what} ({count} objects) with backup {manifest.id}?"):
            raise TargetNotEmptyError(f"not confirmed: {what} left as it was")

    async def _restore_into_postgres(
        self,
        manifest: Manifest,
        target_url: str,
        identities: Sequence[x25519.Identity],
        *,
        force: bool,
        confirm: Callable[[str], bool],
        jobs: int,
        no_owner: bool,
        scratch_dir: str | None,
        warnings: list[str],
    ) -> str:
        server = postgres.PgServer.from_url(target_url)
        target = server.database
        admin = await server.connect_maintenance()
        try:
            owner = await postgres.database_owner(admin, target)
            if owner is not None:
                conn = await server.connect(target)
                try:
                    count = await postgres.relation_count(conn)
                finally:
                    await conn.close()
                self._refuse_or_confirm(
                    f"database {server.display}", count, manifest, force, confirm
                )
            suffix = secrets.token_hex(4)
            temporary = f"{target[:40]}_restore_{suffix}"
            self.progress(f"backup {manifest.id}: restoring into temporary database {temporary}")
            await postgres.create_database(admin, temporary, owner)
            try:
                problems = await self._restore_postgres(
                    manifest,
                    server,
                    temporary,
                    identities,
                    jobs=jobs,
                    no_owner=no_owner,
                    scratch_dir=scratch_dir,
                )
                if problems:
                    raise IntegrityFailure(
                        f"backup {manifest.id} does not restore to what was backed up "
                        f"(target left as it was):{_describe(problems)}"
                    )
                warning = await postgres.swap_in(admin, temporary, target, suffix)
                if warning:
                    warnings.append(warning)
            except BaseException:
                with contextlib.suppress(Exception):
                    await postgres.drop_database(admin, temporary)
                raise
        finally:
            await admin.close()
        self.progress(f"backup {manifest.id}: database {server.display} replaced")
        return server.display

    async def _restore_into_sqlite(
        self,
        manifest: Manifest,
        target_url: str,
        identities: Sequence[x25519.Identity],
        *,
        force: bool,
        confirm: Callable[[str], bool],
    ) -> str:
        path = sqlite.path_of(target_url).resolve()
        count = sqlite.table_count(path)
        self._refuse_or_confirm(f"SQLite database {path}", count, manifest, force, confirm)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise self._disk_error(exc, path.parent) from None
        temporary = path.with_name(f".{path.name}.restore-{secrets.token_hex(4)}")
        try:
            problems = await asyncio.to_thread(
                self._restore_sqlite_file, manifest, temporary, identities
            )
            if problems:
                raise IntegrityFailure(
                    f"backup {manifest.id} does not restore to what was backed up "
                    f"(target left as it was):{_describe(problems)}"
                )
            sqlite.replace_file(temporary, path)
        finally:
            for leftover in ("", "-wal", "-shm", "-journal"):
                with contextlib.suppress(OSError):
                    temporary.with_name(temporary.name + leftover).unlink(missing_ok=True)
        return str(path)

    # --- prune ---------------------------------------------------------------------------

    def prune(
        self,
        *,
        dry_run: bool = False,
        retention_days: int | None = None,
        keep_daily: int | None = None,
        keep_weekly: int | None = None,
        keep_monthly: int | None = None,
    ) -> PruneReport:
        settings = self.settings.backup
        now = self.clock.now()
        manifests = self.manifests(warnings=[])
        kept_ids = retention.keep(
            [(m.id, m.started_at.astimezone(UTC)) for m in manifests],
            now,
            retention_days=settings.retention_days if retention_days is None else retention_days,
            keep_daily=settings.keep_daily if keep_daily is None else keep_daily,
            keep_weekly=settings.keep_weekly if keep_weekly is None else keep_weekly,
            keep_monthly=settings.keep_monthly if keep_monthly is None else keep_monthly,
        )
        report = PruneReport(kept=[], deleted=[], orphans_deleted=[], errors=[])
        for manifest in manifests:
            if manifest.id in kept_ids:
                report.kept.append(manifest.id)
                continue
            report.deleted.append(manifest.id)
            if dry_run:
                continue
            try:
                # Manifest first: from then on the backup is incomplete, never half-listed.
                self.store.delete(self.manifest_key(manifest.id))
                self.store.delete(manifest.object.key)
            except StorageError as exc:
                report.errors.append(f"{manifest.id}: {exc}")
        complete = {m.id for m in manifests}
        with self._storage():
            objects = list(self.store.list(self.prefix))
        for info in objects:
            backup_id = info.key[len(self.prefix) :].split(".", 1)[0]
            if backup_id in complete or not ID_PATTERN.match(backup_id):
                continue
            if info.key.endswith(MANIFEST_SUFFIX) or now - info.modified < ORPHAN_GRACE:
                continue
            report.orphans_deleted.append(info.key)
            if not dry_run:
                try:
                    self.store.delete(info.key)
                except StorageError as exc:
                    report.errors.append(f"{info.key}: {exc}")
        return report


def load_identities(path: str | Path | None) -> list[x25519.Identity]:
    if not path:
        raise ConfigurationError(
            "no private key: pass --identity FILE or set CTAFLEET_BACKUP__IDENTITY_FILE (keep "
            "the private key off the host that creates backups)"
        )
    return crypto.load_identities(Path(path))


def manifest_json(manifests: Sequence[Manifest]) -> list[dict[str, Any]]:
    return [m.model_dump(mode="json") for m in manifests]
