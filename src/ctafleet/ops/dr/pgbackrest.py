"""pgBackRest: its configuration as pgBackRest reads it, and its commands."""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ctafleet.db.conninfo import ConnInfo
from ctafleet.ops.dr.proc import DrError, OsUser, run

DEFAULT_CONFIG = Path("/etc/pgbackrest/pgbackrest.conf")
DEFAULT_INCLUDE_PATH = Path("/etc/pgbackrest/conf.d")
DEFAULT_STANZA = "ctafleet"


def parse_config(text: str) -> dict[str, dict[str, str]]:
    """pgBackRest's INI dialect: `[section]`, `key=value`, `#` comments."""
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1].strip(), {})
            continue
        if "=" not in line or current is None:
            raise DrError(f"pgBackRest configuration line {number} is not key=value: {raw!r}")
        key, value = line.split("=", 1)
        current[key.strip()] = value.strip()
    return sections


@dataclass
class PgBackRest:
    stanza: str = DEFAULT_STANZA
    config: Path | None = None  # None: pgBackRest's own default (or PGBACKREST_CONFIG)
    repo: int | None = None
    user: OsUser | None = None
    env: dict[str, str] | None = None
    _sections: dict[str, dict[str, str]] | None = field(default=None, repr=False)

    @property
    def config_path(self) -> Path:
        if self.config is not None:
            return self.config
        return Path((self.env or os.environ).get("PGBACKREST_CONFIG") or DEFAULT_CONFIG)

    def sections(self) -> dict[str, dict[str, str]]:
        if self._sections is None:
            path = self.config_path
            try:
                merged = parse_config(path.read_text())
            except FileNotFoundError:
                raise DrError(
                    f"pgBackRest configuration {path} not found; pass --pgbackrest-config "
                    "(deploy/pgbackrest/pgbackrest.conf is the template)"
                ) from None
            except PermissionError:
                raise DrError(f"cannot read {path}: run as root or its owner") from None
            include = Path(
                (self.env or os.environ).get("PGBACKREST_CONFIG_INCLUDE_PATH")
                or DEFAULT_INCLUDE_PATH
            )
            if include.is_dir():
                for extra in sorted(include.glob("*.conf")):
                    try:
                        for name, values in parse_config(extra.read_text()).items():
                            merged.setdefault(name, {}).update(values)
                    except PermissionError:
                        continue  # secrets only pgBackRest itself (as postgres) may read
            self._sections = merged
        return self._sections

    def option(self, name: str, command: str | None = None) -> str | None:
        """The value pgBackRest would use: environment first, then the stanza's and the
        global sections (command-specific sections before plain ones)."""
        env = self.env or os.environ
        from_env = env.get("PGBACKREST_" + name.upper().replace("-", "_"))
        if from_env:
            return from_env
        sections = self.sections()
        order = []
        if command:
            order.append(f"{self.stanza}:{command}")
        order.append(self.stanza)
        if command:
            order.append(f"global:{command}")
        order.append("global")
        for section in order:
            if name in sections.get(section, {}):
                return sections[section][name]
        return None

    def pg_path(self) -> Path:
        value = self.option("pg1-path")
        if not value:
            raise DrError(f"no pg1-path for stanza {self.stanza!r} in {self.config_path}")
        return Path(value)

    def pg_conninfo(self) -> ConnInfo:
        """How pgBackRest itself reaches the server (pg1-socket-path, pg1-port, pg1-user)."""
        return ConnInfo(
            host=self.option("pg1-socket-path") or self.option("pg1-host") or "/var/run/postgresql",
            port=int(self.option("pg1-port") or 5432),
            user=self.option("pg1-user") or "postgres",
            database=self.option("pg1-database") or "postgres",
        )

    def argv(self, command: str, *args: str, repo: bool = True) -> list[str]:
        argv = ["pgbackrest", f"--stanza={self.stanza}"]
        if self.config is not None:
            argv.append(f"--config={self.config}")
        if repo and self.repo is not None:
            argv.append(f"--repo={self.repo}")
        return [*argv, *args, command]

    def run(
        self, command: str, *args: str, timeout: float | None = None, check: bool = True
    ) -> Any:
        return run(
            self.argv(command, *args, repo=command not in {"check", "stanza-create"}),
            user=self.user,
            env=self.env,
            timeout=timeout,
            check=check,
            what=f"pgbackrest {command}",
        )

    def verify(self) -> tuple[bool, str]:
        """`pgbackrest verify` of the repository (or each one), with its verdict.

        pgBackRest 2.45 exits 0 even when verify finds damage or cannot decrypt the
        repository; the verdict is only in the report it prints with --output=text.
        """
        out = self.run("verify", "--output=text", "--verbose", timeout=7200).stdout
        statuses = [
            line.split(":", 1)[1].strip()
            for line in out.splitlines()
            if line.strip().startswith("status:")
        ]
        return bool(statuses) and all(s == "ok" for s in statuses), out.strip()

    def info(self) -> dict[str, Any]:
        """The stanza's entry of `pgbackrest info --output=json`."""
        out = self.run("info", "--output=json", timeout=300).stdout
        try:
            stanzas = json.loads(out)
        except json.JSONDecodeError:
            raise DrError(f"pgbackrest info printed no JSON: {out[:200]!r}") from None
        for entry in stanzas:
            if entry.get("name") == self.stanza:
                status = entry.get("status", {})
                if status.get("code", 0) not in (0,):
                    raise DrError(
                        f"pgbackrest info: stanza {self.stanza}: {status.get('message')}"
                        + "".join(
                            f"\n  repo{r.get('key')}: {r.get('status', {}).get('message')}"
                            for r in entry.get("repo", [])
                            if r.get("status", {}).get("code", 0) != 0
                        )
                    )
                return dict(entry)
        raise DrError(f"pgbackrest info: no stanza {self.stanza!r}")


@dataclass(frozen=True)
class BackupSet:
    label: str
    type: str
    repo: int
    started_at: dt.datetime
    stopped_at: dt.datetime
    lsn_stop: str | None

    @classmethod
    def from_info(cls, entry: dict[str, Any]) -> BackupSet:
        stamp = entry.get("timestamp", {})
        return cls(
            label=str(entry["label"]),
            type=str(entry.get("type", "")),
            repo=int(entry.get("database", {}).get("repo-key", 0)),
            started_at=dt.datetime.fromtimestamp(int(stamp["start"]), dt.UTC),
            stopped_at=dt.datetime.fromtimestamp(int(stamp["stop"]), dt.UTC),
            lsn_stop=(entry.get("lsn") or {}).get("stop"),
        )


def backup_sets(info: dict[str, Any], repo: int | None = None) -> list[BackupSet]:
    """Completed backups, oldest first, of one repository or all."""
    sets = [
        BackupSet.from_info(b)
        for b in info.get("backup", [])
        if not b.get("error") and "timestamp" in b
    ]
    if repo is not None:
        sets = [s for s in sets if s.repo == repo]
    return sorted(sets, key=lambda s: s.stopped_at)
