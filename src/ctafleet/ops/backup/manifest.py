"""The manifest stored next to each backup, and the comparison of a restore against it.

A backup is complete when its manifest exists: the manifest is written after the encrypted
object, so a run that died half-way leaves an object without a manifest, which `list` and
`restore` ignore and `prune` removes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MANIFEST_SUFFIX = ".manifest.json"


class TableStats(BaseModel):
    model_config = ConfigDict(frozen=True)

    rows: int
    # Order-independent digest of the rows' contents (see postgres.py / sqlite.py).
    checksum: str


class DatabaseStats(BaseModel):
    """What a database holds, measured the same way on the source and on a restore."""

    kind: Literal["postgresql", "sqlite"]
    schema_revision: str | None
    tables: dict[str, TableStats]
    rls_tables: int | None = None
    rls_policies: int | None = None


class StoredObject(BaseModel):
    key: str
    size: int
    sha256: str
    md5: str


class Manifest(BaseModel):
    format: Literal[1] = 1
    id: str
    database_kind: Literal["postgresql", "sqlite"]
    database_name: str
    server_version: str | None = None
    schema_revision: str | None
    started_at: datetime
    finished_at: datetime
    duration_seconds: float
    object: StoredObject
    dump_bytes: int = Field(description="Size of the dump before compression and encryption.")
    database_bytes: int = Field(description="Size of the database on disk when backed up.")
    compression: str = "zstd"
    compression_level: int
    encryption: str = "age"
    recipients: list[str]
    tables: dict[str, TableStats]
    rls_tables: int | None = None
    rls_policies: int | None = None
    tools: dict[str, str]
    host: str

    @property
    def total_rows(self) -> int:
        return sum(t.rows for t in self.tables.values())

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "database_kind": self.database_kind,
            "finished_at": self.finished_at.isoformat(),
            "size": self.object.size,
            "tables": len(self.tables),
            "rows": self.total_rows,
            "schema_revision": self.schema_revision,
        }


def differences(manifest: Manifest, restored: DatabaseStats) -> list[str]:
    """Every way the restored database differs from what the manifest recorded."""
    problems: list[str] = []
    if restored.schema_revision != manifest.schema_revision:
        problems.append(
            f"schema revision {restored.schema_revision!r} restored, "
            f"{manifest.schema_revision!r} backed up"
        )
    for name in sorted(set(manifest.tables) - set(restored.tables)):
        problems.append(f"table {name} is missing from the restore")
    for name in sorted(set(restored.tables) - set(manifest.tables)):
        problems.append(f"table {name} was restored but is not in the manifest")
    for name in sorted(set(manifest.tables) & set(restored.tables)):
        want, got = manifest.tables[name], restored.tables[name]
        if want.rows != got.rows:
            problems.append(f"table {name}: {got.rows} rows restored, {want.rows} backed up")
        elif want.checksum != got.checksum:
            problems.append(f"table {name}: contents differ (checksum) with equal row counts")
    for label, want_n, got_n in (
        ("tables with row-level security", manifest.rls_tables, restored.rls_tables),
        ("row-level security policies", manifest.rls_policies, restored.rls_policies),
    ):
        if want_n is not None and want_n != got_n:
            problems.append(f"{got_n} {label} restored, {want_n} backed up")
    return problems
