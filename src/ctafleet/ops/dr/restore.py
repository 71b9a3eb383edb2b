"""Point-in-time restore with pgBackRest: restore, start, wait for writes, clean up."""

from __future__ import annotations

import datetime as dt
import os
import shlex
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ctafleet.db.conninfo import ConnInfo
from ctafleet.ops.dr.pgbackrest import PgBackRest, backup_sets
from ctafleet.ops.dr.postgres import (
    LocalServer,
    Pg,
    clean_recovery_settings,
    wait_writable,
)
from ctafleet.ops.dr.proc import DrError, run


class RestoreFailed(DrError):
    """The restore failed after the server was stopped; the message says what state the
    server was left in, and the exit code tells it apart from a refusal (1)."""

    RUNNING = 3  # the server is running again
    DOWN = 4  # the server is down

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def parse_target_time(value: str, now: dt.datetime | None = None) -> dt.datetime:
    """`--to-time` as an aware UTC datetime; see normalise_target_time."""
    return dt.datetime.fromisoformat(normalise_target_time(value, now).replace(" ", "T", 1))


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


def _fingerprint(data: Path) -> dict[str, tuple[int, int, int]]:
    """(size, mtime, inode) of every file: whether a failed restore changed the directory."""
    out: dict[str, tuple[int, int, int]] = {}
    for root, _dirs, files in os.walk(data):
        for name in files:
            path = os.path.join(root, name)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            out[os.path.relpath(path, data)] = (st.st_size, st.st_mtime_ns, st.st_ino)
    return out


def _postmaster_options(data: Path) -> list[str]:
    """The options the running server was started with (postmaster.opts, as `pg_ctl restart`
    reuses them), without the program and its data directory."""
    try:
        argv = shlex.split((data / "postmaster.opts").read_text())
    except (OSError, ValueError):
        return []
    options, skip = [], False
    for arg in argv[1:]:
        if skip:
            skip = False
        elif arg == "-D":
            skip = True
        else:
            options.append(arg)
    return options


def _check_start_command(command: Sequence[str]) -> None:
    program = command[0] if command else ""
    found = shutil.which(program) if program else None
    if not found:
        raise DrError(f"--start-command: {program or '(empty)'!r} is not an executable program")


def _check_timeline(value: str) -> None:
    if value in ("current", "latest"):
        return
    try:
        number = int(value, 16) if value.lower().startswith("0x") else int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise DrError(f"--target-timeline {value!r} is not current, latest or a timeline number")


def _archive_reaches(pg: Pg, target: dt.datetime) -> str | None:
    """Why recovery could not reach `target`, when the running primary can tell; None when it
    may (or when the server cannot say: pgBackRest and PostgreSQL still check).

    Recovery to a time stops at the first commit after it. There is none in the archive when
    the newest commit anywhere is older than the target (track_commit_timestamp), or when
    every archived segment was archived before the target (what is in a segment was written
    before it was archived)."""
    try:
        row = pg.rows(
            "SELECT pg_is_in_recovery() AS standby, a.last_archived_wal, "
            "a.last_archived_time, CASE WHEN current_setting('track_commit_timestamp') = 'on' "
            "THEN (pg_last_committed_xact()).timestamp END AS newest_commit "
            "FROM pg_stat_archiver a"
        )[0]
    except Exception:  # unreachable, or not ours to ask
        return None
    if row["standby"]:
        return None
    newest, archived = row["newest_commit"], row["last_archived_time"]
    if newest is not None and newest < target:
        why = f"the newest commit on the server was at {newest:%Y-%m-%d %H:%M:%S}Z"
    elif archived is not None and archived < target:
        why = (
            f"the newest archived segment ({row['last_archived_wal']}) was archived at "
            f"{archived:%Y-%m-%d %H:%M:%S}Z"
        )
    else:
        return None
    return (
        f"no archived transaction committed after {target.isoformat(sep=' ')}: {why}, "
        "before it, so recovery would end before reaching the target and the server would "
        "not start. `--latest` restores everything archived (the same data); or choose an "
        "earlier --to-time."
    )


def _start_again(
    server: LocalServer,
    pg: Pg,
    options: Sequence[str],
    start_command: Sequence[str] | None,
    *,
    until_writable: bool,
    timeout: float = 120,
) -> str:
    """Start the server the way it ran before; its state once it accepts connections (once it
    accepts writes, with `until_writable`: a restored copy in recovery may still fail it)."""
    started = False
    if start_command:
        try:
            run(list(start_command), env=server.env, timeout=120, what="the start command")
            started = True
        except DrError:
            started = False
    if not started and not server.running():
        server.start(options)
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if not server.running():
            raise DrError(f"it stopped again:\n{server.log_tail()}")
        try:
            in_recovery = pg.value("SELECT pg_is_in_recovery()")
        except Exception as exc:  # starting up
            last = exc
            time.sleep(0.2)
            continue
        if not in_recovery:
            return "accepting writes"
        if not until_writable:
            return "in recovery (a standby, as before)"
        time.sleep(0.2)
    if server.running() and until_writable and last is None:
        return f"still in recovery after {timeout:.0f} s"
    raise DrError(f"it did not accept connections within {timeout:.0f} s ({last})")


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
    end of the archive when it is None), then a serving primary on a new timeline.

    Everything that can be checked is checked before the server is stopped, so a refusal
    (DrError) leaves the server as it was. A failure after the stop starts the server again
    where that is safe and raises RestoreFailed, saying whether it runs.
    """
    # --- checks: nothing is changed until they all pass ------------------------------------
    if pb.user is None:
        raise DrError("no operating-system user to run PostgreSQL as")
    target = normalise_target_time(target_time) if target_time is not None else None
    target_at = parse_target_time(target_time) if target_time is not None else None
    if target_timeline:
        _check_timeline(target_timeline)
    if start_command is not None:
        _check_start_command(start_command)
    data = pg_data or pb.pg_path()
    server = LocalServer(data, pb.user, pg_bin=pg_bin, log_file=log_file, env=pb.env)
    has_files = _dir_has_files(data)
    if has_files and not yes:
        raise DrError(
            f"{data} holds a database; the restore replaces it: pass --yes to confirm "
            "(the server there is stopped first)"
        )
    if has_files and not delta:
        raise DrError(
            f"{data} is not empty: pgBackRest restores into it only with --delta (the default)"
        )
    sets = backup_sets(pb.info(), pb.repo)  # also proves the repository is readable
    where = f"stanza {pb.stanza}" + (f", repo{pb.repo}" if pb.repo else "")
    if not sets:
        raise DrError(f"no backup in {where} to restore from")
    chosen = None
    if backup_set:
        chosen = next((s for s in sets if s.label == backup_set), None)
        if chosen is None:
            labels = ", ".join(s.label for s in sets)
            raise DrError(f"no backup set {backup_set!r} in {where} (there are: {labels})")
    if target_at is not None:
        # pgBackRest takes the newest backup that ended before the target, compared in whole
        # seconds; recovery cannot stop before the end of the backup it starts from.
        cutoff = target_at.replace(microsecond=0)
        candidates = [chosen] if chosen else sets
        if not any(s.stopped_at < cutoff for s in candidates):
            first = candidates[0]
            raise DrError(
                f"--to-time {target} is before the end of "
                + (f"backup {first.label}" if chosen else f"the first backup ({first.label})")
                + f", at {first.stopped_at:%Y-%m-%d %H:%M:%S}Z: no backup can be recovered "
                "to it. Choose a later target"
                + (", or an earlier --set" if chosen else "")
                + " (`pgbackrest info` lists the backups)."
            )
    conn = conn or pb.pg_conninfo()
    pg = Pg(conn)
    was_running = server.running()
    if target_at is not None and was_running:
        why = _archive_reaches(pg, target_at)
        if why:
            raise DrError(why)
    options_before = _postmaster_options(data) if was_running else []

    # --- the change -----------------------------------------------------------------------
    if was_running:
        server.stop("fast", timeout=min(timeout, 300))
    if not data.exists():
        data.mkdir(mode=0o700, parents=True)
        if pb.user.switch_needed:
            os.chown(data, pb.user.uid, pb.user.gid)
    before = _fingerprint(data)
    args: list[str] = []
    if pg_data is not None:
        args.append(f"--pg1-path={data}")
    if delta and has_files:
        args.append("--delta")
    if backup_set:
        args.append(f"--set={backup_set}")
    if target is not None:
        args += ["--type=time", f"--target={target}", "--target-action=promote"]
        if target_exclusive:
            args.append("--target-exclusive")
    else:
        args.append("--type=default")
    if target_timeline:
        args.append(f"--target-timeline={target_timeline}")
    if not archive:
        args.append("--archive-mode=off")
    restored = False

    def mark_restored() -> None:
        nonlocal restored
        restored = True

    try:
        return restore_and_start(
            pb,
            server,
            conn,
            restore_args=args,
            target=target or "latest",
            start_options=start_options,
            start_command=start_command,
            timeout=timeout,
            relax_sync=relax_sync,
            after_restore=mark_restored,
        )
    except Exception as exc:  # whatever it was, the server must not be left down silently
        detail = str(exc) if isinstance(exc, DrError) else f"{type(exc).__name__}: {exc}"
        failure = f"the restore failed after the server was stopped: {detail}"
    raise _after_failure(
        failure,
        server=server,
        pg=pg,
        was_running=was_running,
        unchanged=not restored and _fingerprint(data) == before,
        restored=restored,
        options=options_before,
        start_command=start_command,
    )


def _after_failure(
    failure: str,
    *,
    server: LocalServer,
    pg: Pg,
    was_running: bool,
    unchanged: bool,
    restored: bool,
    options: Sequence[str],
    start_command: Sequence[str] | None,
) -> RestoreFailed:
    data = server.data
    if server.running():
        return RestoreFailed(
            f"{failure}\nThe server at {data} is running (the restored copy): check it "
            "before pointing the application at it.",
            RestoreFailed.RUNNING,
        )
    if not was_running:
        return RestoreFailed(
            f"{failure}\nThe server was not running before the restore and is still DOWN.",
            RestoreFailed.DOWN,
        )
    if not unchanged and not restored:
        return RestoreFailed(
            f"{failure}\nThe server is DOWN: the data directory {data} is partly restored "
            "and must not be started. Fix the cause and run `ctafleet dr restore` again.",
            RestoreFailed.DOWN,
        )
    what = (
        "its original data (the data directory was not changed)"
        if unchanged
        else ("the restored data")
    )
    try:
        state = _start_again(server, pg, options, start_command, until_writable=not unchanged)
    except DrError as exc:
        hint = (
            ""
            if unchanged
            else " The data directory holds the restored backup; fix the cause "
            "and run `ctafleet dr restore` again (`--latest` replays everything archived)."
        )
        return RestoreFailed(
            f"{failure}\nThe server could not be started again with {what}: {exc}\n"
            f"The server is DOWN.{hint}",
            RestoreFailed.DOWN,
        )
    return RestoreFailed(
        f"{failure}\nThe server was started again with {what} and is {state}.",
        RestoreFailed.RUNNING,
    )
