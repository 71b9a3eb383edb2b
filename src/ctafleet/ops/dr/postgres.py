"""Connections to PostgreSQL and control of a local server (pg_ctl)."""

from __future__ import annotations

import asyncio
import os
import shlex
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import URL, text
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine
from sqlalchemy.pool import NullPool

from ctafleet.db.conninfo import ConnInfo, ConnInfoError
from ctafleet.ops.dr.proc import DrError, OsUser, find_pg_bin, run, tail

__all__ = ["ConnInfo", "LocalServer", "Pg", "parse_url"]

T = TypeVar("T")

# Settings pgBackRest writes into postgresql.auto.conf for a restore. Left behind they are
# harmless until the next recovery of this data directory (a standby rebuilt from it, a
# crash restore), which would then chase an old target or read an old repository.
RECOVERY_SETTINGS = (
    "restore_command",
    "recovery_end_command",
    "recovery_target",
    "recovery_target_name",
    "recovery_target_time",
    "recovery_target_xid",
    "recovery_target_lsn",
    "recovery_target_inclusive",
    "recovery_target_timeline",
    "recovery_target_action",
)


# Where a DR command connects when the URL does not say: the server's own account, on the
# Debian socket directory (pgBackRest's pg1-socket-path default).
DEFAULTS = {"host": "/var/run/postgresql", "port": 5432, "user": "postgres", "database": "postgres"}


def parse_url(url: str) -> ConnInfo:
    """A superuser URL given to a DR command, with the defaults above."""
    try:
        return ConnInfo.from_url(url).with_defaults(**DEFAULTS)
    except ConnInfoError as exc:
        raise DrError(str(exc)) from None


class Pg:
    """Short-lived connections for the few queries a DR command makes (no pool)."""

    def __init__(
        self, info: ConnInfo, *, connect_timeout: float = 5.0, command_timeout: float = 600.0
    ) -> None:
        self.info = info
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout

    def run(
        self,
        fn: Callable[[AsyncConnection], Awaitable[T]],
        *,
        isolation: str = "AUTOCOMMIT",
        command_timeout: float | None = None,
    ) -> T:
        info = self.info

        async def go() -> T:
            engine = create_async_engine(
                URL.create("postgresql+asyncpg"),
                poolclass=NullPool,
                connect_args={
                    **info.asyncpg_kwargs(),
                    "timeout": self.connect_timeout,
                    "command_timeout": command_timeout or self.command_timeout,
                    "server_settings": {"application_name": "ctafleet-dr"},
                },
            )
            try:
                async with engine.connect() as conn:
                    conn = await conn.execution_options(isolation_level=isolation)
                    return await fn(conn)
            finally:
                await engine.dispose()

        return asyncio.run(go())

    def rows(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        async def go(conn: AsyncConnection) -> list[dict[str, Any]]:
            result = await conn.execute(text(sql), params or {})
            return [dict(r) for r in result.mappings().all()]

        return self.run(go)

    def value(self, sql: str, params: dict[str, Any] | None = None) -> Any:
        async def go(conn: AsyncConnection) -> Any:
            return (await conn.execute(text(sql), params or {})).scalar()

        return self.run(go)

    def execute(self, *statements: str) -> None:
        async def go(conn: AsyncConnection) -> None:
            for statement in statements:
                await conn.exec_driver_sql(statement)

        self.run(go)


def quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass
class LocalServer:
    """A PostgreSQL data directory on this machine, driven with pg_ctl as its owner."""

    data: Path
    user: OsUser
    pg_bin: Path | None = None
    log_file: Path | None = None
    env: dict[str, str] | None = None

    def pg_ctl(self, *args: str, timeout: float = 120, check: bool = True) -> Any:
        tool = find_pg_bin("pg_ctl", self.data, self.pg_bin)
        return run(
            [tool, "-D", str(self.data), *args],
            user=self.user,
            env=self.env,
            timeout=timeout + 10,
            check=check,
            what=f"pg_ctl {args[-1] if args else ''}".strip(),
        )

    def running(self) -> bool:
        if not (self.data / "postmaster.pid").exists():
            return False
        return bool(self.pg_ctl("status", check=False).returncode == 0)

    def start(self, options: Sequence[str] = (), timeout: float = 60) -> None:
        """Start without waiting: a long archive recovery would outlast pg_ctl's -w, and the
        caller waits for what it needs (writes accepted) itself."""
        log = self.log_file or self.data / "log" / "ctafleet-dr.log"
        if not log.parent.exists():
            log.parent.mkdir(parents=True)
            if self.user.switch_needed:
                os.chown(log.parent, self.user.uid, self.user.gid)
        args = ["-l", str(log), "-W"]
        if options:
            # pg_ctl hands -o to a shell: quote every token.
            args += ["-o", " ".join(shlex.quote(o) for o in options)]
        self.pg_ctl(*args, "start", timeout=timeout)
        self.log_file = log
        # pg_ctl -W returns before the postmaster writes its pid file; until then "not
        # running" would be mistaken for a failed start.
        deadline = time.monotonic() + timeout
        while not (self.data / "postmaster.pid").exists():
            if time.monotonic() > deadline:
                raise DrError(f"the server did not start:\n{self.log_tail()}")
            time.sleep(0.05)

    def stop(self, mode: str = "fast", timeout: float = 120) -> None:
        if self.running():
            self.pg_ctl("-m", mode, "-w", "-t", str(int(timeout)), "stop", timeout=timeout)

    def promote(self, timeout: float = 60) -> None:
        self.pg_ctl("-w", "-t", str(int(timeout)), "promote", timeout=timeout)

    def log_tail(self, lines: int = 20) -> str:
        if self.log_file is None or not self.log_file.exists():
            return "(no server log)"
        return tail(self.log_file.read_text(errors="replace"), lines)


@dataclass
class Writable:
    """A server that left recovery and committed a transaction."""

    seconds: float  # from the call until the write committed
    notes: list[str]
    probe: dict[str, Any]


async def _probe_recovery_end(conn: AsyncConnection) -> dict[str, Any]:
    """What recovery replayed; read before this tool's own write moves the counters."""
    row = (
        (
            await conn.execute(
                text(
                    "SELECT pg_last_xact_replay_timestamp() AS last_replayed_commit, "
                    "pg_last_wal_replay_lsn()::text AS replay_lsn, "
                    "pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS next_xid, "
                    # The control file's timeline waits for the end-of-recovery
                    # checkpoint; the current WAL file's name has the new one already.
                    "('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))"
                    "::bit(32)::int AS timeline, "
                    "current_setting('synchronous_standby_names') AS sync_names, "
                    "(SELECT count(*) FROM pg_stat_replication "
                    " WHERE sync_state IN ('sync', 'quorum')) AS sync_connected"
                )
            )
        )
        .mappings()
        .one()
    )
    return dict(row)


def wait_writable(
    pg: Pg,
    *,
    timeout: float,
    server: LocalServer | None = None,
    relax_sync: bool = True,
) -> Writable:
    """Poll until the server is out of recovery and commits a transaction.

    A promoted standby or a restored primary keeps the synchronous_standby_names of the
    server it came from; with none of those standbys connected, every commit would wait
    forever. With `relax_sync` the setting is cleared (and said so), otherwise it is an error.
    """
    started = time.monotonic()
    deadline = started + timeout
    last_error: Exception | None = None
    notes: list[str] = []
    probe: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        if server is not None and not server.running():
            raise DrError(f"the server stopped before accepting writes:\n{server.log_tail()}")
        try:
            if pg.value("SELECT pg_is_in_recovery()"):
                time.sleep(0.1)
                continue
            if probe is None:
                probe = pg.run(_probe_recovery_end)
                if probe["sync_names"] and not probe["sync_connected"]:
                    if not relax_sync:
                        raise DrError(
                            "writes would wait for a synchronous standby "
                            f"({probe['sync_names']}) that is not connected; attach one or "
                            "run without --keep-synchronous-standbys"
                        )
                    pg.execute(
                        "ALTER SYSTEM SET synchronous_standby_names = ''", "SELECT pg_reload_conf()"
                    )
                    notes.append(
                        f"synchronous_standby_names was {probe['sync_names']!r} with no such "
                        "standby connected; cleared so commits do not wait. Set it again once "
                        "a new standby streams from this server."
                    )

            async def write(conn: AsyncConnection) -> Any:
                return (await conn.execute(text("SELECT pg_current_xact_id()::text"))).scalar()

            pg.run(write, command_timeout=10)
            return Writable(time.monotonic() - started, notes, probe)
        except DrError:
            raise
        except Exception as exc:  # not up yet, still promoting, reload not applied yet
            last_error = exc
            time.sleep(0.2)
    detail = f"{type(last_error).__name__}: {last_error}" if last_error else "still in recovery"
    log = f"\n{server.log_tail()}" if server is not None else ""
    raise DrError(f"the server did not accept writes within {timeout:.0f} s ({detail}){log}")


def clean_recovery_settings(pg: Pg, data: Path | None = None) -> list[str]:
    """Remove the recovery settings from postgresql.auto.conf through ALTER SYSTEM, so the
    file is rewritten by the server itself with the right owner and format."""
    present = pg.rows(
        "SELECT DISTINCT name FROM pg_file_settings "
        "WHERE sourcefile LIKE '%postgresql.auto.conf' AND name = ANY(:names) ORDER BY name",
        {"names": list(RECOVERY_SETTINGS)},
    )
    names = [r["name"] for r in present]
    if names:
        pg.execute(*(f"ALTER SYSTEM RESET {n}" for n in names), "SELECT pg_reload_conf()")
    if data is not None:
        auto = data / "postgresql.auto.conf"
        if auto.exists():
            left = [
                line
                for line in auto.read_text().splitlines()
                if line.split("=", 1)[0].strip() in RECOVERY_SETTINGS
            ]
            if left:
                raise DrError(f"recovery settings still in {auto}: {left}")
    return names
