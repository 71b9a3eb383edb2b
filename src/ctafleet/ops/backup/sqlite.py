"""SQLite (the embedded default): the online backup API, and contents measured like PostgreSQL's.

The online backup API copies a consistent snapshot page by page while the application keeps
writing (WAL mode); the copy, not the live file, is measured and encrypted.

Content checksum of a table: the sum, modulo 2**128, of the SHA-256 of each row's `repr`, so it
does not depend on row order.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from ctafleet.ops.backup.errors import BackupError, ConfigurationError
from ctafleet.ops.backup.manifest import DatabaseStats, TableStats

_MOD = 2**128


def path_of(url: str) -> Path:
    try:
        u = make_url(url)
    except ArgumentError:
        raise ConfigurationError("not a database URL") from None
    if u.get_backend_name() != "sqlite":
        raise ConfigurationError(f"{u.get_backend_name()!r} is not a SQLite URL")
    if not u.database or u.database == ":memory:":
        raise ConfigurationError("a SQLite backup needs a database file, not :memory:")
    return Path(u.database)


def _connect(path: Path, *, readonly: bool = True) -> sqlite3.Connection:
    mode = "ro" if readonly else "rw"
    try:
        return sqlite3.connect(f"file:{path}?mode={mode}", uri=True, timeout=30)
    except sqlite3.Error as exc:
        raise BackupError(f"cannot open SQLite database {path}: {exc}") from None


def snapshot(source: Path, copy: Path) -> None:
    """A consistent copy of `source` at `copy`, through the online backup API."""
    if not source.is_file():
        raise BackupError(f"SQLite database {source} does not exist")
    src = _connect(source)
    try:
        dst = sqlite3.connect(copy)
        try:
            src.backup(dst, pages=4096)
        finally:
            dst.close()
    except sqlite3.Error as exc:
        if "full" in str(exc):
            raise BackupError(f"no space left in {copy.parent} for the SQLite snapshot") from None
        raise BackupError(f"SQLite online backup of {source} failed: {exc}") from None
    finally:
        src.close()


def _tables(conn: sqlite3.Connection) -> list[str]:
    rows = conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' "
        "ESCAPE '\\' ORDER BY name"
    ).fetchall()
    return [str(r[0]) for r in rows]


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def collect_stats(path: Path) -> DatabaseStats:
    conn = _connect(path)
    try:
        tables: dict[str, TableStats] = {}
        for name in _tables(conn):
            rows, total = 0, 0
            for row in conn.execute(f"SELECT * FROM {_quote(name)}"):  # noqa: S608 - quoted
                digest = hashlib.sha256(repr(row).encode()).digest()
                total = (total + int.from_bytes(digest[:16], "big")) % _MOD
                rows += 1
            tables[name] = TableStats(rows=rows, checksum=f"{total:032x}")
        revision = None
        if "alembic_version" in tables:
            values = [str(r[0]) for r in conn.execute("SELECT version_num FROM alembic_version")]
            revision = ",".join(sorted(values)) or None
        return DatabaseStats(kind="sqlite", schema_revision=revision, tables=tables)
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"cannot read SQLite database {path}: {exc}") from None
    finally:
        conn.close()


def sanity_problems(path: Path) -> list[str]:
    conn = _connect(path)
    try:
        problems = []
        result = [str(r[0]) for r in conn.execute("PRAGMA integrity_check")]
        if result != ["ok"]:
            problems.append("integrity_check: " + "; ".join(result[:5]))
        broken = conn.execute("PRAGMA foreign_key_check").fetchall()
        if broken:
            problems.append(f"{len(broken)} rows violate foreign keys")
        return problems
    except sqlite3.DatabaseError as exc:
        return [f"not a readable SQLite database: {exc}"]
    finally:
        conn.close()


def table_count(path: Path) -> int:
    """Tables in the file; a file that is not a SQLite database counts as one (never
    overwritten without --force)."""
    if not path.exists() or path.stat().st_size == 0:
        return 0
    conn = _connect(path)
    try:
        return len(_tables(conn))
    except sqlite3.DatabaseError:
        return 1
    finally:
        conn.close()


def replace_file(temporary: Path, target: Path) -> None:
    """Move a restored file into place. The target's WAL and shared-memory files go first:
    left behind, SQLite would replay the old database's WAL into the new file."""
    for suffix in ("-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            target.with_name(target.name + suffix).unlink()
    os.replace(temporary, target)
    fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sqlite_version() -> str:
    return sqlite3.sqlite_version
