"""PostgreSQL: dump with `pg_dump -Fc`, restore with `pg_restore`, and measure contents.

Consistency: the manifest's row counts and checksums are taken in the same snapshot as the
dump (`pg_export_snapshot()` held open while `pg_dump --snapshot` runs), so a busy database
still yields a manifest that a restore must match exactly.

Content checksum of a table: the 64-bit `hashtextextended` of every row's text form, summed
as numeric, with the row count; a sum does not depend on row order (a restore writes rows in
a different physical order) and lets PostgreSQL scan in parallel, which halves the check on
two cores. Text forms depend on session settings, which are pinned (`SESSION`) on both
sides. `hashtextextended` is the hash behind hash partitioning, which PostgreSQL keeps stable
across versions and platforms. The checksum detects a restore that differs, not an
adversary: the stored object's SHA-256 and age's authentication do that.

Row-level security: a superuser or BYPASSRLS role sees every row as is. Any other role reads
with `ctafleet.scope = 'system'`, which CTAFleet's policies let through, and pg_dump runs with
`--enable-row-security`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any

import asyncpg

from ctafleet.db.conninfo import ConnInfo, ConnInfoError
from ctafleet.ops.backup.errors import BackupError, ConfigurationError
from ctafleet.ops.backup.manifest import DatabaseStats, TableStats

APPLICATION_NAME = "ctafleet-backup"
SESSION = {
    "TimeZone": "UTC",
    "DateStyle": "ISO, YMD",
    "IntervalStyle": "postgres",
    "extra_float_digits": "1",
    "bytea_output": "hex",
    "ctafleet.scope": "system",
    "application_name": APPLICATION_NAME,
}
_USER_SCHEMAS = (
    "n.nspname NOT IN ('pg_catalog', 'information_schema') "
    "AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'"
)
# Tables that belong to an extension (PostGIS's spatial_ref_sys) come back with the extension.
_NOT_EXTENSION = (
    "NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass "
    "AND d.objid = c.oid AND d.deptype = 'e')"
)
# The f-strings below join constant fragments; no value from outside reaches them.
TABLES_SQL = f"""
SELECT n.nspname AS schema, c.relname AS name
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND {_USER_SCHEMAS} AND {_NOT_EXTENSION}
ORDER BY 1, 2
"""  # noqa: S608
RELATIONS_SQL = f"""
SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND {_USER_SCHEMAS} AND {_NOT_EXTENSION}
"""  # noqa: S608
RLS_SQL = f"""
SELECT count(*) FILTER (WHERE c.relrowsecurity) AS tables,
       (SELECT count(*) FROM pg_policy) AS policies
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND {_USER_SCHEMAS}
"""  # noqa: S608
CHECKSUM_SQL = """
SELECT count(*) AS n, coalesce(sum(hashtextextended(ROW(t.*)::text, 0)::numeric), 0) AS h
FROM ONLY {table} AS t
"""


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True)
class PgServer:
    """Where to connect: the configured URL, parsed once by ctafleet.db.conninfo."""

    info: ConnInfo

    @classmethod
    def from_url(cls, url: str) -> PgServer:
        try:
            info = ConnInfo.from_url(url)
        except ConnInfoError as exc:
            raise ConfigurationError(f"the database URL: {exc}") from None
        return cls(info.with_defaults(database="postgres"))

    @property
    def database(self) -> str:
        return self.info.database or "postgres"

    def with_database(self, name: str) -> PgServer:
        return replace(self, info=self.info.with_database(name))

    @property
    def display(self) -> str:
        """host:port/database, without credentials."""
        return f"{self.info.host or 'localhost'}:{self.info.port or 5432}/{self.database}"

    def env(self) -> dict[str, str]:
        """libpq variables for pg_dump/pg_restore: the password never appears in `ps`."""
        env = self.info.environ(os.environ)
        env["PGAPPNAME"] = APPLICATION_NAME
        env.setdefault("PGCONNECT_TIMEOUT", "15")
        return env

    async def connect(self, database: str | None = None) -> asyncpg.Connection:
        try:
            return await asyncpg.connect(
                **{
                    "timeout": 15,
                    **self.info.asyncpg_kwargs(),
                    "database": database or self.database,
                    "server_settings": SESSION,
                    "statement_cache_size": 0,
                }
            )
        except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
            where = self.with_database(database or self.database).display
            raise BackupError(f"cannot connect to PostgreSQL at {where}: {exc}") from None

    async def connect_maintenance(self) -> asyncpg.Connection:
        """A connection for CREATE/DROP/ALTER DATABASE: not to the database being changed."""
        last: BackupError | None = None
        for name in ("postgres", "template1"):
            try:
                return await self.connect(name)
            except BackupError as exc:
                last = exc
        assert last is not None
        raise last


def tool(name: str, bin_dir: str = "") -> str:
    path = Path(bin_dir) / name if bin_dir else shutil.which(name)
    if not path or not Path(path).is_file():
        where = f"in {bin_dir}" if bin_dir else "on PATH"
        raise ConfigurationError(
            f"{name} not found {where}: install postgresql-client (at least the server's major "
            "version) or set CTAFLEET_BACKUP__PG_BIN_DIR"
        )
    return str(path)


def tool_version(path: str) -> str:
    try:
        out = subprocess.run(  # noqa: S603 - a fixed argument list
            [path, "--version"], capture_output=True, text=True, timeout=15, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.strip().rsplit(" ", 1)[-1] if out.strip() else "unknown"


def stderr_tail(handle: IO[bytes], limit: int = 1500) -> str:
    handle.seek(0)
    text = handle.read().decode(errors="replace").strip()
    return text[-limit:] if text else "(no message)"


async def collect_stats(conn: asyncpg.Connection) -> DatabaseStats:
    tables: dict[str, TableStats] = {}
    for row in await conn.fetch(TABLES_SQL):
        qualified = f"{quote_ident(row['schema'])}.{quote_ident(row['name'])}"
        # fetch, not fetchrow: a row limit on the portal rules out a parallel scan.
        [got] = await conn.fetch(CHECKSUM_SQL.format(table=qualified))
        digest = hashlib.sha256(f"{got['n']}:{got['h']}".encode()).hexdigest()
        tables[f"{row['schema']}.{row['name']}"] = TableStats(rows=got["n"], checksum=digest[:32])
    rls = await conn.fetchrow(RLS_SQL)
    return DatabaseStats(
        kind="postgresql",
        schema_revision=await schema_revision(conn),
        tables=tables,
        rls_tables=rls["tables"],
        rls_policies=rls["policies"],
    )


async def schema_revision(conn: asyncpg.Connection) -> str | None:
    if await conn.fetchval("SELECT to_regclass('public.alembic_version')") is None:
        return None
    value = await conn.fetchval(
        "SELECT string_agg(version_num, ',' ORDER BY version_num) FROM public.alembic_version"
    )
    return str(value) if value is not None else None


async def relation_count(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval(RELATIONS_SQL))


async def sanity_problems(conn: asyncpg.Connection) -> list[str]:
    """Queries a healthy restore answers as expected, beyond the manifest's numbers."""
    problems = []
    if await conn.fetchval("SELECT 1") != 1:
        problems.append("SELECT 1 did not return 1")
    invalid = await conn.fetchval("SELECT count(*) FROM pg_index WHERE NOT indisvalid")
    if invalid:
        problems.append(f"{invalid} invalid indexes")
    unprotected = await conn.fetch(
        f"""
        SELECT n.nspname || '.' || c.relname AS name
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relrowsecurity AND {_USER_SCHEMAS}
          AND NOT EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid)
        """  # noqa: S608 - constant fragments
    )
    for row in unprotected:
        problems.append(f"table {row['name']} has row-level security but no policy")
    return problems


@dataclass
class DumpResult:
    stats: DatabaseStats
    server_version: str
    database_name: str
    database_bytes: int
    tools: dict[str, str]
    upload: Any  # what the upload callable returned


async def dump(
    server: PgServer,
    upload: Callable[[IO[bytes], Callable[[], None]], Any],
    *,
    bin_dir: str = "",
) -> DumpResult:
    """Run pg_dump -Fc in one snapshot, hand its output stream to `upload` (in a thread) and,
    meanwhile, measure the same snapshot's contents."""
    pg_dump = tool("pg_dump", bin_dir)
    conn = await server.connect()
    try:
        server_version = str(await conn.fetchval("SHOW server_version"))
        name, size, privileged = await conn.fetchrow(
            "SELECT current_database(), pg_database_size(current_database()), "
            "(SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user)"
        )
        await conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        snapshot = await conn.fetchval("SELECT pg_export_snapshot()")
        command = [pg_dump, "--format=custom", "--compress=0", "--no-password"]
        command.append(f"--snapshot={snapshot}")
        env = server.env()
        if not privileged:
            command.append("--enable-row-security")
            env["PGOPTIONS"] = "-c ctafleet.scope=system"
        with tempfile.TemporaryFile() as errors:
            # Popen returns at once; the waiting happens in the upload thread.
            proc = subprocess.Popen(  # noqa: S603, ASYNC220 - fixed arguments, password in env
                command, stdout=subprocess.PIPE, stderr=errors, env=env
            )
            assert proc.stdout is not None

            def finished() -> None:
                code = proc.wait()
                if code != 0:
                    raise BackupError(f"pg_dump failed (exit {code}): {stderr_tail(errors)}")

            uploading = asyncio.ensure_future(asyncio.to_thread(upload, proc.stdout, finished))
            measuring = asyncio.ensure_future(collect_stats(conn))
            try:
                # Whichever fails first ends the run: an upload refused by the storage must not
                # wait for the checksums of a large database.
                done, _ = await asyncio.wait(
                    {uploading, measuring}, return_when=asyncio.FIRST_EXCEPTION
                )
                for task in done:
                    error = task.exception()
                    if error is not None:
                        raise error
                stats, uploaded = await measuring, await uploading
            except BaseException:
                proc.kill()
                measuring.cancel()
                for task in (uploading, measuring):
                    with contextlib.suppress(BaseException):
                        await task
                raise
            finally:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=30)
                proc.stdout.close()
        await conn.execute("COMMIT")
    finally:
        await conn.close()
    return DumpResult(
        stats=stats,
        server_version=server_version,
        database_name=name,
        database_bytes=int(size),
        tools={"pg_dump": tool_version(pg_dump)},
        upload=uploaded,
    )


def restore_command(
    dbname: str, *, no_owner: bool, bin_dir: str, jobs: int = 1, path: Path | None = None
) -> list[str]:
    command = [tool("pg_restore", bin_dir), "--exit-on-error", "--no-password"]
    command.append(f"--dbname={dbname}")
    if no_owner:
        command += ["--no-owner", "--no-acl"]
    if path is not None:
        command += [f"--jobs={jobs}", str(path)]
    return command


def restore_failed(code: int, errors: IO[bytes]) -> BackupError:
    message = stderr_tail(errors)
    hint = ""
    if "role" in message and "does not exist" in message:
        hint = (
            " (the backup names roles this server lacks: create them, or pass --no-owner "
            "and re-grant with `ctafleet db upgrade`)"
        )
    return BackupError(f"pg_restore failed (exit {code}): {message}{hint}")


def restore_from_stream(
    server: PgServer,
    dbname: str,
    feed: Callable[[IO[bytes]], None],
    *,
    no_owner: bool,
    bin_dir: str,
) -> None:
    """pg_restore into `dbname`, reading the dump that `feed` writes to its stdin."""
    command = restore_command(dbname, no_owner=no_owner, bin_dir=bin_dir)
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(  # noqa: S603 - fixed arguments, password in env
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=errors,
            env=server.env(),
        )
        assert proc.stdin is not None
        try:
            feed(proc.stdin)
            proc.stdin.close()
        except BrokenPipeError:
            # pg_restore stopped reading; its own message says why.
            code = proc.wait()
            raise restore_failed(code, errors) from None
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        code = proc.wait()
        if code != 0:
            raise restore_failed(code, errors)


def restore_from_file(
    server: PgServer, dbname: str, path: Path, *, jobs: int, no_owner: bool, bin_dir: str
) -> None:
    command = restore_command(dbname, no_owner=no_owner, bin_dir=bin_dir, jobs=jobs, path=path)
    with tempfile.TemporaryFile() as errors:
        code = subprocess.run(  # noqa: S603 - fixed arguments, password in env
            command, stdout=subprocess.DEVNULL, stderr=errors, env=server.env(), check=False
        ).returncode
        if code != 0:
            raise restore_failed(code, errors)


async def database_owner(conn: asyncpg.Connection, name: str) -> str | None:
    owner = await conn.fetchval(
        "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = $1", name
    )
    return str(owner) if owner is not None else None


async def create_database(conn: asyncpg.Connection, name: str, owner: str | None) -> None:
    statement = f"CREATE DATABASE {quote_ident(name)} TEMPLATE template0"
    if owner:
        try:
            await conn.execute(f"{statement} OWNER {quote_ident(owner)}")
            return
        except asyncpg.InsufficientPrivilegeError:
            pass  # not a member of the owner role: the restoring role owns it
    try:
        await conn.execute(statement)
    except asyncpg.PostgresError as exc:
        raise BackupError(
            f"cannot create the temporary database {name}: {exc} (the restoring role needs "
            "CREATEDB)"
        ) from None


async def drop_database(conn: asyncpg.Connection, name: str) -> None:
    await conn.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")


async def swap_in(conn: asyncpg.Connection, temporary: str, target: str, suffix: str) -> str | None:
    """Make `temporary` the database named `target`, replacing any existing one; a warning
    when the replaced database could not be dropped.

    The two renames commit together, so `target` names either the old or the new database,
    never nothing; connections to the old one are refused and ended first.
    """
    exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", target)
    if not exists:
        await conn.execute(
            f"ALTER DATABASE {quote_ident(temporary)} RENAME TO {quote_ident(target)}"
        )
        return None
    old = f"{target[:40]}_old_{suffix}"
    await conn.execute(f"ALTER DATABASE {quote_ident(target)} ALLOW_CONNECTIONS false")
    try:
        for attempt in range(50):
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = $1 AND pid <> pg_backend_pid()",
                target,
            )
            try:
                async with conn.transaction():
                    await conn.execute(
                        f"ALTER DATABASE {quote_ident(target)} RENAME TO {quote_ident(old)}"
                    )
                    await conn.execute(
                        f"ALTER DATABASE {quote_ident(temporary)} RENAME TO {quote_ident(target)}"
                    )
                break
            except asyncpg.ObjectInUseError:
                # A terminated backend takes a moment to exit.
                if attempt == 49:
                    raise
                await asyncio.sleep(0.1)
    except BaseException:
        with contextlib.suppress(asyncpg.PostgresError):
            await conn.execute(f"ALTER DATABASE {quote_ident(target)} ALLOW_CONNECTIONS true")
        raise
    try:
        await drop_database(conn, old)
    except asyncpg.PostgresError as exc:
        return f"the replaced database, renamed {old}, could not be dropped ({exc}): drop it"
    return None
