"""`ctafleet dr status`: how much data a disaster would cost now, and how long recovery takes.

Each check yields a value, its target and a state: ok, breach, or unknown (could not be
measured; a breach under --strict).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ctafleet.ops.dr import logical
from ctafleet.ops.dr.pgbackrest import PgBackRest, backup_sets
from ctafleet.ops.dr.postgres import Pg
from ctafleet.ops.dr.proc import DrError
from ctafleet.ops.dr.report import read_report

OK, BREACH, UNKNOWN = "ok", "breach", "unknown"
# A segment's first page starts with a long header (40 bytes): an insert position no further
# than that into the segment after the last archived one means nothing new was written.
LONG_PAGE_HEADER = 40


@dataclass
class StatusTargets:
    rpo_seconds: float = 60.0
    rto_seconds: float = 300.0
    replica_lag_seconds: float = 30.0
    logical_backup_age_seconds: float = 26 * 3600.0
    physical_backup_age_seconds: float = 26 * 3600.0
    drill_age_seconds: float = 100 * 86400.0  # quarterly drills, with a week of slack
    expect_standbys: int = 0


@dataclass
class Check:
    name: str
    state: str
    value: float | None = None
    target: float | None = None
    unit: str = "s"
    detail: str = ""
    data: dict[str, Any] = field(default_factory=dict)


def _segment_start_after(wal_name: str, segment_size: int) -> int | None:
    """LSN (as an integer) where the segment after `wal_name` begins."""
    name = wal_name[:24]
    if len(name) != 24 or any(c not in "0123456789ABCDEF" for c in name):
        return None  # a .history file: no segment to measure from
    per_id = 0x100000000 // segment_size
    segno = int(name[8:16], 16) * per_id + int(name[16:24], 16)
    return (segno + 1) * segment_size


def check_archive(pg: Pg, targets: StatusTargets, now: dt.datetime) -> Check:
    """RPO now: the age of the oldest write not yet in the archive (0 when none is pending)."""
    row = pg.rows(
        "SELECT pg_is_in_recovery() AS standby, current_setting('archive_mode') AS mode, "
        "a.last_archived_wal, a.last_archived_time, a.last_failed_wal, a.last_failed_time, "
        "a.failed_count, a.archived_count, "
        "(SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size') AS segsize, "
        "CASE WHEN pg_is_in_recovery() THEN NULL "
        "     ELSE pg_current_wal_insert_lsn()::text END AS insert_lsn, "
        "pg_postmaster_start_time() AS started "
        "FROM pg_stat_archiver a"
    )[0]
    name = "wal_archive_rpo"
    if row["standby"]:
        return Check(
            name,
            UNKNOWN,
            target=targets.rpo_seconds,
            detail="this server is a standby; run status against the primary",
        )
    if row["mode"] == "off":
        return Check(
            name,
            BREACH,
            target=targets.rpo_seconds,
            detail="archive_mode is off: nothing reaches the archive",
        )
    high, low = str(row["insert_lsn"]).split("/")
    insert = (int(high, 16) << 32) | int(low, 16)
    last_wal, last_time = row["last_archived_wal"], row["last_archived_time"]
    pending = None
    if last_wal:
        start = _segment_start_after(last_wal, int(row["segsize"]))
        if start is not None:
            pending = max(insert - start - LONG_PAGE_HEADER, 0)
    failing = row["last_failed_time"] is not None and (
        last_time is None or row["last_failed_time"] > last_time
    )
    data = {
        "last_archived_wal": last_wal,
        "last_archived_at": last_time.isoformat() if last_time else None,
        "last_failed_wal": row["last_failed_wal"],
        "last_failed_at": row["last_failed_time"].isoformat() if row["last_failed_time"] else None,
        "failed_count": row["failed_count"],
        "unarchived_bytes": pending,
    }
    if pending == 0 and not failing:
        value = 0.0
        detail = f"everything up to {last_wal} is archived"
    else:
        since = last_time or row["started"]
        value = max((now - since).total_seconds(), 0.0)
        detail = f"last archived {last_wal or 'nothing yet'}"
        if last_time:
            detail += f" at {last_time:%Y-%m-%d %H:%M:%S}Z"
        if failing:
            detail += (
                f"; archive_command FAILING since {row['last_failed_time']:%H:%M:%S}Z "
                f"on {row['last_failed_wal']}"
            )
    state = OK if value <= targets.rpo_seconds and not failing else BREACH
    return Check(name, state, round(value, 3), targets.rpo_seconds, detail=detail, data=data)


def check_replication(pg: Pg, targets: StatusTargets) -> Check:
    name = "replica_lag"
    standby = bool(pg.value("SELECT pg_is_in_recovery()"))
    if standby:
        row = pg.rows(
            "SELECT (SELECT status FROM pg_stat_wal_receiver) AS receiver, "
            "CASE WHEN pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn() "
            "     THEN 0 ELSE extract(epoch FROM now() - pg_last_xact_replay_timestamp()) "
            "END AS lag, pg_last_xact_replay_timestamp() AS replayed"
        )[0]
        lag = float(row["lag"] or 0.0)
        if row["receiver"] != "streaming":
            return Check(
                name,
                BREACH,
                lag,
                targets.replica_lag_seconds,
                detail=f"standby not streaming from its primary ({row['receiver']})",
            )
        state = OK if lag <= targets.replica_lag_seconds else BREACH
        return Check(
            name,
            state,
            round(lag, 3),
            targets.replica_lag_seconds,
            detail="standby, streaming",
            data={"role": "standby"},
        )
    rows = pg.rows(
        "SELECT application_name AS name, state, sync_state, "
        "coalesce(extract(epoch FROM replay_lag), 0) AS lag, "
        "pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn) AS behind_bytes "
        "FROM pg_stat_replication ORDER BY application_name"
    )
    standbys = [
        {"name": r["name"], "state": r["state"], "sync_state": r["sync_state"],
         "lag_seconds": float(r["lag"]), "behind_bytes": int(r["behind_bytes"] or 0)}
        for r in rows
    ]  # fmt: skip
    streaming = [s for s in standbys if s["state"] == "streaming"]
    data = {"role": "primary", "standbys": standbys}
    if len(streaming) < targets.expect_standbys:
        return Check(
            name,
            BREACH,
            None,
            targets.replica_lag_seconds,
            data=data,
            detail=f"{len(streaming)} standby(s) streaming, {targets.expect_standbys} expected",
        )
    if not standbys:
        return Check(
            name,
            OK,
            None,
            targets.replica_lag_seconds,
            data=data,
            detail="no standby (none expected)",
        )
    lag = max(s["lag_seconds"] for s in standbys)
    state = OK if lag <= targets.replica_lag_seconds else BREACH
    detail = ", ".join(f"{s['name']} {s['state']}/{s['sync_state']}" for s in standbys)
    return Check(name, state, round(lag, 3), targets.replica_lag_seconds, detail=detail, data=data)


def check_physical_backup(pb: PgBackRest, targets: StatusTargets, now: dt.datetime) -> Check:
    name = "physical_backup_age"
    sets = backup_sets(pb.info(), pb.repo)
    if not sets:
        return Check(
            name,
            BREACH,
            None,
            targets.physical_backup_age_seconds,
            detail=f"no pgBackRest backup in stanza {pb.stanza}",
        )
    newest = sets[-1]
    age = (now - newest.stopped_at).total_seconds()
    state = OK if age <= targets.physical_backup_age_seconds else BREACH
    per_repo = {}
    for s in sets:
        per_repo[f"repo{s.repo}"] = {"label": s.label, "stopped_at": s.stopped_at.isoformat()}
    return Check(
        name,
        state,
        round(age, 1),
        targets.physical_backup_age_seconds,
        detail=f"{newest.label} ({newest.type}) in repo{newest.repo}",
        data=per_repo,
    )


def check_logical_backup(targets: StatusTargets, now: dt.datetime) -> Check:
    name = "logical_backup_age"
    ok, why = logical.available()
    if not ok:
        return Check(
            name,
            UNKNOWN,
            None,
            targets.logical_backup_age_seconds,
            detail=f"`ctafleet backup` not available: {why}",
        )
    backups = logical.list_backups()
    if not backups:
        return Check(
            name, BREACH, None, targets.logical_backup_age_seconds, detail="no logical backup"
        )
    newest = backups[-1]
    when = newest.finished_at or newest.started_at
    if when is None:
        return Check(
            name,
            UNKNOWN,
            None,
            targets.logical_backup_age_seconds,
            detail=f"backup {newest.id} has no time",
        )
    age = (now - when).total_seconds()
    state = OK if age <= targets.logical_backup_age_seconds else BREACH
    return Check(
        name, state, round(age, 1), targets.logical_backup_age_seconds, detail=f"backup {newest.id}"
    )


def check_drill(reports: Sequence[Path], targets: StatusTargets, now: dt.datetime) -> Check:
    """Estimated RTO: the time the most recent drill took to a serving database."""
    name = "rto_estimate"
    found = [(p, r) for p in reports if (r := read_report(p)) is not None]
    if not found:
        return Check(
            name,
            UNKNOWN,
            None,
            targets.rto_seconds,
            detail="no drill report: run `ctafleet dr drill`",
        )
    path, newest = max(found, key=lambda pr: str(pr[1].get("finished_at", "")))
    finished = dt.datetime.fromisoformat(str(newest["finished_at"]))
    age = (now - finished).total_seconds()
    rto = newest.get("rto_seconds")
    data = {
        "report": str(path),
        "mode": newest.get("mode"),
        "finished_at": newest["finished_at"],
        "success": newest.get("success"),
        "rpo_seconds": newest.get("rpo_seconds"),
    }
    if not newest.get("success"):
        return Check(
            name,
            BREACH,
            rto,
            targets.rto_seconds,
            data=data,
            detail="the last drill failed: "
            + ("; ".join(newest.get("failures") or []) or newest.get("error") or "verification"),
        )
    if age > targets.drill_age_seconds:
        return Check(
            name,
            BREACH,
            rto,
            targets.rto_seconds,
            data=data,
            detail=f"the last drill is {age / 86400:.0f} days old",
        )
    state = OK if rto is not None and rto <= targets.rto_seconds else BREACH
    return Check(
        name,
        state,
        rto,
        targets.rto_seconds,
        data=data,
        detail=f"{newest.get('mode')} drill of {finished:%Y-%m-%d}",
    )


def collect(
    *,
    pg: Pg | None,
    pb: PgBackRest | None,
    drill_reports: Sequence[Path],
    targets: StatusTargets,
    logical_backups: bool = True,
    now: dt.datetime | None = None,
) -> list[Check]:
    now = now or dt.datetime.now(dt.UTC)
    checks: list[Check] = []

    def guarded(name: str, fn: Any, *args: Any) -> None:
        try:
            checks.append(fn(*args))
        except (DrError, OSError) as exc:
            checks.append(Check(name, UNKNOWN, detail=str(exc).splitlines()[0]))
        except Exception as exc:  # a database that cannot be reached is a finding, not a crash
            checks.append(Check(name, UNKNOWN, detail=f"{type(exc).__name__}: {exc}"[:300]))

    if pg is not None:
        guarded("wal_archive_rpo", check_archive, pg, targets, now)
        guarded("replica_lag", check_replication, pg, targets)
    else:
        checks.append(Check("wal_archive_rpo", UNKNOWN, detail="no database to ask (--pg-url)"))
    if pb is not None:
        guarded("physical_backup_age", check_physical_backup, pb, targets, now)
    if logical_backups:
        guarded("logical_backup_age", check_logical_backup, targets, now)
    guarded("rto_estimate", check_drill, drill_reports, targets, now)
    return checks


def as_json(checks: Sequence[Check], strict: bool) -> dict[str, Any]:
    return {
        "ok": exit_code(checks, strict) == 0,
        "checked_at": dt.datetime.now(dt.UTC).isoformat(),
        "checks": [asdict(c) for c in checks],
    }


def exit_code(checks: Sequence[Check], strict: bool) -> int:
    bad = {BREACH, UNKNOWN} if strict else {BREACH}
    return 1 if any(c.state in bad for c in checks) else 0


def render(checks: Sequence[Check]) -> str:
    def fmt(value: float | None, unit: str) -> str:
        if value is None:
            return "-"
        if unit == "s" and value >= 7200:
            return f"{value / 3600:.1f} h"
        return f"{value:.1f} {unit}"

    lines = [f"{'CHECK':<20} {'STATE':<8} {'VALUE':>10} {'TARGET':>11}  DETAIL"]
    for c in checks:
        target = f"<= {fmt(c.target, c.unit)}" if c.target is not None else "-"
        lines.append(
            f"{c.name:<20} {c.state.upper():<8} {fmt(c.value, c.unit):>10} {target:>11}  {c.detail}"
        )
    return "\n".join(lines)
