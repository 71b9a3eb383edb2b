"""Logical backups, reached only through the `ctafleet backup` command line.

The contract: `backup create` prints the backup id on its last stdout line, `backup list
--json` prints the backups, `backup restore [ID | --latest] --target-url URL [--force]
[--yes]` restores one into a database. Going through the CLI (not its Python functions)
keeps this package independent of how logical backups are implemented.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ctafleet.ops.dr.proc import DrError, run

# Field names a backup entry may carry, most precise first: the data in a dump is as of the
# moment it started, so a start time measures the RPO exactly and an end time only bounds it.
START_FIELDS = ("started_at", "start_time", "start", "snapshot_at")
END_FIELDS = ("finished_at", "completed_at", "ended_at", "end_time", "end", "created_at", "time")
ID_FIELDS = ("id", "backup_id", "name", "key")


def backup_cli() -> list[str]:
    """The `ctafleet` command: CTAFLEET_BACKUP_CLI, or this interpreter's own package."""
    override = os.environ.get("CTAFLEET_BACKUP_CLI")
    if override:
        return shlex.split(override)
    return [sys.executable, "-m", "ctafleet.cli"]


def available() -> tuple[bool, str]:
    result = run([*backup_cli(), "backup", "--help"], check=False, timeout=60)
    if result.returncode == 0:
        return True, ""
    reason = (result.stderr or result.stdout).strip().splitlines()
    return False, reason[-1] if reason else f"exit {result.returncode}"


def _parse_time(value: Any) -> dt.datetime | None:
    if isinstance(value, int | float):
        return dt.datetime.fromtimestamp(float(value), dt.UTC)
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _first(entry: dict[str, Any], names: Sequence[str]) -> Any:
    for name in names:
        if entry.get(name) not in (None, ""):
            return entry[name]
    manifest = entry.get("manifest")
    if isinstance(manifest, dict):
        for name in names:
            if manifest.get(name) not in (None, ""):
                return manifest[name]
    return None


@dataclass(frozen=True)
class LogicalBackup:
    id: str
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    raw: dict[str, Any]

    @property
    def data_as_of(self) -> dt.datetime | None:
        return self.started_at or self.finished_at


def list_backups() -> list[LogicalBackup]:
    """Every backup `ctafleet backup list --json` reports, oldest first."""
    result = run([*backup_cli(), "backup", "list", "--json"], timeout=300, what="backup list")
    try:
        data = json.loads(result.stdout)
    except json.JSONDecodeError:
        raise DrError(
            f"`ctafleet backup list --json` printed no JSON: {result.stdout[:200]!r}"
        ) from None
    if isinstance(data, dict):
        data = data.get("backups") or data.get("data") or data.get("items") or []
    backups = []
    for entry in data if isinstance(data, list) else []:
        if not isinstance(entry, dict):
            continue
        ident = _first(entry, ID_FIELDS)
        if ident is None:
            continue
        backups.append(
            LogicalBackup(
                id=str(ident),
                started_at=_parse_time(_first(entry, START_FIELDS)),
                finished_at=_parse_time(_first(entry, END_FIELDS)),
                raw=entry,
            )
        )
    epoch = dt.datetime.min.replace(tzinfo=dt.UTC)
    return sorted(backups, key=lambda b: b.finished_at or b.started_at or epoch)


def restore(backup_id: str, target_url: str, extra_args: Sequence[str] = ()) -> None:
    run(
        [
            *backup_cli(),
            "backup",
            "restore",
            backup_id,
            "--target-url",
            target_url,
            "--yes",
            *extra_args,
        ],
        timeout=3600,
        what="ctafleet backup restore",
    )
