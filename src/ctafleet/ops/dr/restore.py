"""Point-in-time restore with pgBackRest: restore, start, wait for writes, clean up."""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ctafleet.db.conninfo import ConnInfo
from ctafleet.ops.dr.pgbackrest import PgBackRest
from ctafleet.ops.dr.postgres import (
    LocalServer,
    Pg,
    clean_recovery_settings,
    wait_writable,
)
from ctafleet.ops.dr.proc import DrError, run


def normalise_target_time(value: str, now: dt.datetime | None = None) -> str:
    """An ISO 8601 time with an explicit offset, as PostgreSQL's recovery_target_time.

    A time without an offset would be read in the restored server's time zone, which is
    not necessarily the operator's; a time in the future cannot be reached and PostgreSQL
    refuses to start ("recovery ended before configured recovery target was reached").
    """
    raw = value.strip()
    try:
        parsed = dt.datetime.fromisoformat(raw.replace(" ", "T", 1) if " " in raw else raw)
    except ValueError:
        raise DrError(
            f"--to-time {value!r} is not an ISO 8601 time such as 2026-03-01T14:05:00+00:00"
        ) from None
    if parsed.tzinfo is None:
        raise DrError(
            f"--to-time {value!r} has no UTC offset; add one (Z or +00:00) so the target "
            "does not depend on the server's time zone"
        )
    now = now or dt.datetime.now(dt.UTC)
    if parsed > now:
        raise DrError(f"--to-time {value!r} is in the future; recovery could never reach it")
    return parsed.astimezone(dt.UTC).isoformat(sep=" ")


@dataclass
class RestoreResult:
    pg_data: str
    target: str
    restore_seconds: float
    startup_seconds: float
    total_seconds: float
    timeline: int | None
    recovered_to: str | None  # commit time of the last transaction replayed
    replay_lsn: str | None
    next_xid: int | None
    removed_settings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _dir_has_files(path: Path) -> bool:
    return path.is_dir() and any(path.iterdir())


def restore_and_start(
    pb: PgBackRest,
    server: LocalServer,
    conn: ConnInfo,
    *,
    restore_args: Sequence[str],
    target: str,
    start_options: Sequence[str] = (),
    start_command: Sequence[str] | None = None,
    timeout: float = 900,
    relax_sync: bool = True,
    clean: bool = True,
    after_restore: Callable[[], None] | None = None,
) -> RestoreResult:
    """pgbackrest restore into `server.data`, start the server, wait until it commits."""
    started = time.monotonic()
    try:
        pb.run("restore", *restore_args, timeout=timeout)
    except DrError as exc:
        if "unable to find backup set with stop time" in str(exc):
            raise DrError(
                f"{exc}\nThe target is before the end of every backup in the repository "
                "(backup times are recorded to the second): choose a later target, or an "
                "earlier backup with --set LABEL (`pgbackrest info` lists them)."
            ) from None
        raise
    if after_restore is not None:
        after_restore()
    restored = time.monotonic()
    if start_command:
        run(list(start_command), env=server.env, timeout=120, what="the start command")
    else:
        server.start(start_options)
    try:
        ready = wait_writable(
            Pg(conn),
            timeout=max(timeout - (restored - started), 60),
            server=server,
            relax_sync=relax_sync,
        )
    except DrError as exc:
        if "recovery ended before configured recovery target was reached" in str(exc):
            raise DrError(
                f"{exc}\nNo transaction in the archive committed after {target}: recovery "
                "stops at the first commit past the target, and there is none. Everything "
                "archived is older than the target, so `--latest` restores the same data."
            ) from None
        raise
    serving = time.monotonic()
    removed = clean_recovery_settings(Pg(conn), server.data) if clean else []
    probe = ready.probe
    recovered = probe.get("last_replayed_commit")
    return RestoreResult(
        pg_data=str(server.data),
        target=target,
        restore_seconds=round(restored - started, 3),
        startup_seconds=round(serving - restored, 3),
        total_seconds=round(serving - started, 3),
        timeline=probe.get("timeline"),
        recovered_to=recovered.isoformat() if isinstance(recovered, dt.datetime) else None,
        replay_lsn=probe.get("replay_lsn"),
        next_xid=probe.get("next_xid"),
        removed_settings=removed,
        notes=list(ready.notes),
    )


def restore_in_place(
    pb: PgBackRest,
    *,
    target_time: str | None,
    pg_data: Path | None = None,
    conn: ConnInfo | None = None,
    delta: bool = True,
    backup_set: str | None = None,
    target_timeline: str | None = None,
    target_exclusive: bool = False,
    yes: bool = False,
    start_options: Sequence[str] = (),
    start_command: Sequence[str] | None = None,
    log_file: Path | None = None,
    pg_bin: Path | None = None,
    timeout: float = 900,
    relax_sync: bool = True,
    archive: bool = True,
) -> RestoreResult:
    """`ctafleet dr restore`: the stanza's data directory back to `target_time` (or to the
    end of the archive when it is None), then a serving primary on a new timeline."""
    if pb.user is None:
        raise DrError("no operating-system user to run PostgreSQL as")
    data = pg_data or pb.pg_path()
    server = LocalServer(data, pb.user, pg_bin=pg_bin, log_file=log_file, env=pb.env)
    if _dir_has_files(data) and not yes:
        raise DrError(
            f"{data} holds a database; the restore replaces it: pass --yes to confirm "
            "(the server there is stopped first)"
        )
    if server.running():
        server.stop("fast", timeout=min(timeout, 300))
    if not data.exists():
        data.mkdir(mode=0o700, parents=True)
        if pb.user.switch_needed:
            os.chown(data, pb.user.uid, pb.user.gid)
    args: list[str] = []
    if pg_data is not None:
        args.append(f"--pg1-path={data}")
    if delta and _dir_has_files(data):
        args.append("--delta")
    if backup_set:
        args.append(f"--set={backup_set}")
    if target_time is not None:
        target = normalise_target_time(target_time)
        args += ["--type=time", f"--target={target}", "--target-action=promote"]
        if target_exclusive:
            args.append("--target-exclusive")
    else:
        target = "latest"
        args.append("--type=default")
    if target_timeline:
        args.append(f"--target-timeline={target_timeline}")
    if not archive:
        args.append("--archive-mode=off")
    return restore_and_start(
        pb,
        server,
        conn or pb.pg_conninfo(),
        restore_args=args,
        target=target,
        start_options=start_options,
        start_command=start_command,
        timeout=timeout,
        relax_sync=relax_sync,
    )
