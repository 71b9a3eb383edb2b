"""`ctafleet dr drill`: restore the latest backup into a scratch instance and measure it.

RTO is the time from the start of the restore to a database that commits a transaction.
RPO is the committed data the restore lacks relative to the source at the start of the
drill: with track_commit_timestamp, the time between the source's newest commit and the
newest commit in the restore (exact); without it, the source's age since the restored point
when the source has transactions the restore lacks (an upper bound). The data itself is
verified: every table of the source is there with its row count, the schema revision
matches, and the operator's sanity queries hold.
"""

from __future__ import annotations

import datetime as dt
import secrets
import shutil
import socket
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from ctafleet.db.conninfo import ConnInfo
from ctafleet.ops.dr import logical
from ctafleet.ops.dr.pgbackrest import PgBackRest, backup_sets
from ctafleet.ops.dr.postgres import LocalServer, Pg, quote_ident
from ctafleet.ops.dr.proc import DrError, chown_tree
from ctafleet.ops.dr.report import REPORT_KIND
from ctafleet.ops.dr.restore import restore_and_start


@dataclass
class DataState:
    """One database at one moment: what a restore must reproduce."""

    captured_at: dt.datetime
    next_xid: int
    snapshot: str
    wal_lsn: str | None
    newest_commit_at: dt.datetime | None
    revision: str | None
    counts: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["tables"] = len(self.counts)
        out["rows"] = sum(self.counts.values())
        del out["counts"]
        return out


async def _capture(conn: AsyncConnection) -> DataState:
    async with conn.begin():
        # Counts that RLS filtered would look like data loss; refuse instead.
        await conn.exec_driver_sql("SET LOCAL row_security = off")
        head = (
            (
                await conn.execute(
                    text(
                        "SELECT now() AS at, pg_current_snapshot()::text AS snapshot, "
                        "pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS next_xid, "
                        "(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() "
                        " ELSE pg_current_wal_lsn() END)::text AS lsn, "
                        "current_setting('track_commit_timestamp') = 'on' AS commit_ts"
                    )
                )
            )
            .mappings()
            .one()
        )
        newest = None
        if head["commit_ts"]:
            newest = (
                await conn.execute(text("SELECT (pg_last_committed_xact()).timestamp"))
            ).scalar()
        tables = (
            await conn.execute(
                text(
                    "SELECT n.nspname AS schema, c.relname AS name FROM pg_class c "
                    "JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition "
                    "AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
                    "AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%' "
                    "ORDER BY 1, 2"
                )
            )
        ).all()
        counts: dict[str, int] = {}
        for schema, name in tables:
            qualified = f"{quote_ident(schema)}.{quote_ident(name)}"
            count_sql = f"SELECT count(*) FROM {qualified}"  # noqa: S608 - quoted catalog names
            value = (await conn.execute(text(count_sql))).scalar()
            counts[f"{schema}.{name}"] = int(value or 0)
        revision = None
        if "public.alembic_version" in counts:
            revision = (
                await conn.execute(
                    text(
                        "SELECT string_agg(version_num, ',' ORDER BY version_num) "
                        "FROM alembic_version"
                    )
                )
            ).scalar()
    return DataState(
        captured_at=head["at"],
        next_xid=int(head["next_xid"]),
        snapshot=str(head["snapshot"]),
        wal_lsn=head["lsn"],
        newest_commit_at=newest,
        revision=revision,
        counts=counts,
    )


def capture(pg: Pg) -> DataState:
    return pg.run(_capture, isolation="REPEATABLE READ")


def source_changed(pg: Pg, before: DataState, restored: DataState) -> bool:
    """Whether the source's row counts moved during the drill. Asked only when the restore's
    counts differ (a second pass over the source costs a scan of every table); per-table
    counts, unlike transaction ids, ignore other databases of the server and the scratch
    database a logical drill creates on it."""
    if restored.counts == before.counts:
        return False
    return capture(pg).counts != before.counts


def lsn_bytes(lsn: str | None) -> int | None:
    if not lsn or "/" not in lsn:
        return None
    high, low = lsn.split("/", 1)
    return (int(high, 16) << 32) | int(low, 16)


def run_sanity(pg: Pg, queries: Sequence[str]) -> list[dict[str, Any]]:
    results = []
    for query in queries:
        try:
            value = pg.value(query)
            results.append({"query": query, "ok": bool(value), "value": str(value)})
        except Exception as exc:
            results.append({"query": query, "ok": False, "error": f"{type(exc).__name__}: {exc}"})
    return results


def verify(
    source: DataState,
    restored: DataState,
    sanity: list[dict[str, Any]],
    *,
    counts_must_match: bool,
) -> dict[str, Any]:
    """Tables present, revision equal, sanity queries true; counts equal when nothing was
    lost and the source did not change during the drill (else a difference is expected)."""
    missing = sorted(set(source.counts) - set(restored.counts))
    mismatches = [
        {"table": t, "source": n, "restored": restored.counts[t]}
        for t, n in source.counts.items()
        if t in restored.counts and restored.counts[t] != n
    ]
    revision_ok = source.revision == restored.revision
    problems = []
    if missing:
        problems.append(f"tables missing from the restore: {', '.join(missing)}")
    if not revision_ok:
        problems.append(f"schema revision {restored.revision} != source {source.revision}")
    if mismatches and counts_must_match:
        problems.append(
            "row counts differ although no data was lost and the source did not change: "
            + ", ".join(f"{m['table']} {m['restored']}/{m['source']}" for m in mismatches)
        )
    problems += [f"sanity query failed: {s['query']}" for s in sanity if not s["ok"]]
    return {
        "ok": not problems,
        "problems": problems,
        "tables_compared": len(source.counts),
        "rows_source": sum(source.counts.values()),
        "rows_restored": sum(restored.counts.values()),
        "missing_tables": missing,
        "count_mismatches": mismatches,
        "counts_must_match": counts_must_match,
        "revision": {"source": source.revision, "restored": restored.revision},
        "sanity": sanity,
    }


# A physical restore replays archived WAL, so its RPO is bounded by archiving (archive_timeout
# 60 s in deploy/pgbackrest/postgresql.conf.snippet). A logical restore has only the dump: its
# RPO is bounded by the backup schedule, daily, plus the 2 hours of slack CTAFleetBackupStale
# allows a late run.
PHYSICAL_RPO_TARGET = 60.0
LOGICAL_RPO_TARGET = 26 * 3600.0
RTO_TARGET = 300.0


@dataclass
class Targets:
    rto_seconds: float = RTO_TARGET
    rpo_seconds: float = PHYSICAL_RPO_TARGET


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_utc(value: Any) -> dt.datetime | None:
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    if isinstance(value, str) and value:
        return _as_utc(dt.datetime.fromisoformat(value))
    return None


def _finish(report: dict[str, Any], targets: Targets, started: dt.datetime) -> dict[str, Any]:
    """The verdict, one for the printed result, the exit code and the success metric: passed
    when the restore verified and met both targets; `failures` says why not."""
    finished = dt.datetime.now(dt.UTC)
    report["finished_at"] = finished.isoformat()
    report["duration_seconds"] = round((finished - started).total_seconds(), 3)
    rto, rpo = report.get("rto_seconds"), report.get("rpo_seconds")
    report["rto_met"] = rto is not None and rto <= targets.rto_seconds
    report["rpo_met"] = rpo is not None and rpo <= targets.rpo_seconds
    verification = report.get("verification") or {}
    report["verified"] = bool(verification.get("ok")) and not report.get("error")
    failures: list[str] = []
    if report.get("error"):
        failures.append(str(report["error"]))
    failures += list(verification.get("problems", []))
    if not report.get("error") and not verification:
        failures.append("nothing was verified")
    for key, value, target in (
        ("RTO", rto, targets.rto_seconds),
        ("RPO", rpo, targets.rpo_seconds),
    ):
        if value is None:
            if not report.get("error"):
                failures.append(f"{key} not measured")
        elif value > target:
            failures.append(f"{key} {value:.1f} s exceeds the target of {target:.0f} s")
    report["failures"] = failures
    report["success"] = not failures
    if report["success"]:
        report["last_success_at"] = report["finished_at"]
    return report


def _new_report(mode: str, source: ConnInfo, targets: Targets) -> dict[str, Any]:
    return {
        "kind": REPORT_KIND,
        "version": 1,
        "mode": mode,
        "started_at": dt.datetime.now(dt.UTC).isoformat(),
        "source": {"server": source.describe()},
        "targets": asdict(targets),
        "rto_seconds": None,
        "rpo_seconds": None,
        "error": None,
    }


def physical_drill(
    pb: PgBackRest,
    source: ConnInfo,
    *,
    targets: Targets,
    scratch_parent: Path | None = None,
    backup_set: str | None = None,
    sanity_queries: Sequence[str] = (),
    server_options: Sequence[str] = (),
    pg_bin: Path | None = None,
    keep: bool = False,
    timeout: float = 1800,
) -> dict[str, Any]:
    """Restore the newest backup and all archived WAL into a scratch data directory, served
    on a private socket, and compare it with the source."""
    if pb.user is None:
        raise DrError("no operating-system user to run PostgreSQL as")
    user = pb.user
    started = dt.datetime.now(dt.UTC)
    report = _new_report("physical", source, targets)
    report["backup"] = {"stanza": pb.stanza, "repo": pb.repo}
    src = Pg(source)
    scratch = Path(tempfile.mkdtemp(prefix="ctafleet-drill-", dir=scratch_parent))
    server: LocalServer | None = None
    try:
        info = pb.info()
        sets = backup_sets(info, pb.repo)
        if not sets:
            raise DrError(f"no backup in stanza {pb.stanza} to restore")
        chosen = next((s for s in sets if s.label == backup_set), None) if backup_set else sets[-1]
        if chosen is None:
            raise DrError(f"no backup set {backup_set!r} in stanza {pb.stanza}")
        report["backup"].update(
            label=chosen.label, type=chosen.type, stopped_at=chosen.stopped_at.isoformat()
        )
        before = capture(src)
        report["source"].update(before.as_dict())

        data, run_dir = scratch / "data", scratch / "run"
        for d in (data, run_dir):
            d.mkdir(mode=0o700)
        hba = scratch / "pg_hba.conf"
        # Only the socket in a private directory: no TCP listener for a copy of production.
        hba.write_text("local all all trust\n")
        chown_tree(scratch, pb.user)
        port = _free_port()
        options = [
            "-c", f"port={port}",
            "-c", "listen_addresses=",
            "-c", f"unix_socket_directories={run_dir}",
            "-c", f"hba_file={hba}",
            "-c", "archive_mode=off",
            "-c", "synchronous_standby_names=",
            "-c", "cluster_name=ctafleet-drill",
            *server_options,
        ]  # fmt: skip
        server = LocalServer(
            data, pb.user, pg_bin=pg_bin, log_file=scratch / "server.log", env=pb.env
        )
        restore_args = [
            f"--pg1-path={data}",
            # The scratch copy must never push its new timeline into the real archive.
            "--archive-mode=off",
            f"--tablespace-map-all={scratch / 'tablespaces'}",
            "--type=default",
            f"--set={chosen.label}",
        ]
        scratch_conn = ConnInfo(
            host=str(run_dir),
            port=port,
            user=pb.option("pg1-user") or "postgres",
            database=source.database,
        )

        def ensure_config() -> None:
            # A data directory from a Debian-style cluster keeps postgresql.conf in /etc;
            # the scratch server still needs one.
            conf = data / "postgresql.conf"
            if not conf.exists():
                conf.write_text("# ctafleet dr drill: scratch instance\n")
                chown_tree(conf, user)

        restore = restore_and_start(
            pb,
            server,
            scratch_conn,
            restore_args=restore_args,
            target="latest",
            start_options=options,
            timeout=timeout,
            clean=False,
            after_restore=ensure_config,
        )
        report["restore"] = restore.as_dict()
        report["rto_seconds"] = restore.total_seconds
        t0 = time.monotonic()
        dst = Pg(scratch_conn)
        after = capture(dst)
        sanity = run_sanity(dst, sanity_queries)
        recovered_point = _as_utc(restore.recovered_to) or chosen.stopped_at
        newest = _as_utc(before.newest_commit_at)
        if newest is not None:
            lost = newest > recovered_point
            rpo = (newest - recovered_point).total_seconds() if lost else 0.0
            method = "commit-timestamps"
        else:
            lost = restore.next_xid is not None and before.next_xid > restore.next_xid
            rpo = (before.captured_at - recovered_point).total_seconds() if lost else 0.0
            method = "transaction-ids (upper bound; enable track_commit_timestamp for exact)"
        src_bytes, dst_bytes = lsn_bytes(before.wal_lsn), lsn_bytes(restore.replay_lsn)
        report["rpo_seconds"] = round(max(rpo, 0.0), 3)
        report["rpo_method"] = method
        report["lost_transactions"] = lost
        report["lost_wal_bytes"] = (
            max(src_bytes - dst_bytes, 0) if src_bytes is not None and dst_bytes else None
        )
        changed = source_changed(src, before, after)
        report["source_changed_during_drill"] = changed
        report["verification"] = verify(
            before, after, sanity, counts_must_match=not lost and not changed
        )
        report["verify_seconds"] = round(time.monotonic() - t0, 3)
    except Exception as exc:  # every failure must still reach the report and the metrics
        report["error"] = str(exc) if isinstance(exc, DrError) else f"{type(exc).__name__}: {exc}"
    finally:
        if server is not None:
            try:
                server.stop("immediate", timeout=60)
            except DrError as exc:
                report["cleanup_error"] = str(exc)
        if keep:
            report["scratch"] = str(scratch)
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    return _finish(report, targets, started)


def logical_drill(
    source: ConnInfo,
    scratch_server: ConnInfo,
    *,
    targets: Targets,
    sanity_queries: Sequence[str] = (),
    restore_args: Sequence[str] = (),
    keep: bool = False,
) -> dict[str, Any]:
    """Restore the newest `ctafleet backup` into a new database and compare it."""
    started = dt.datetime.now(dt.UTC)
    report = _new_report("logical", source, targets)
    src = Pg(source)
    admin = Pg(scratch_server)
    name = f"ctafleet_drill_{started:%Y%m%d%H%M%S}_{secrets.token_hex(3)}"
    created = False
    try:
        ok, why = logical.available()
        if not ok:
            raise DrError(f"`ctafleet backup` is not available: {why}")
        backups = logical.list_backups()
        if not backups:
            raise DrError("`ctafleet backup list` reports no backup to restore")
        latest = backups[-1]
        report["backup"] = {
            "id": latest.id,
            "started_at": latest.started_at.isoformat() if latest.started_at else None,
            "finished_at": latest.finished_at.isoformat() if latest.finished_at else None,
        }
        before = capture(src)
        report["source"].update(before.as_dict())
        admin.execute(f"CREATE DATABASE {quote_ident(name)} TEMPLATE template0")
        created = True
        target = scratch_server.with_database(name)
        report["scratch_database"] = name
        t0 = time.monotonic()
        logical.restore(latest.id, target.url(), restore_args)
        dst = Pg(target)
        dst.value("SELECT pg_current_xact_id()::text")
        report["rto_seconds"] = round(time.monotonic() - t0, 3)
        t1 = time.monotonic()
        after = capture(dst)
        sanity = run_sanity(dst, sanity_queries)
        as_of = latest.data_as_of
        newest = _as_utc(before.newest_commit_at)
        counts_equal = before.counts == after.counts
        if as_of is None:
            raise DrError(f"backup {latest.id} has no time in `backup list --json`")
        if newest is not None:
            lost = newest > as_of
            rpo = (newest - as_of).total_seconds() if lost else 0.0
            method = "commit-timestamp vs backup " + ("start" if latest.started_at else "end")
        else:
            lost = not counts_equal
            rpo = (before.captured_at - as_of).total_seconds() if lost else 0.0
            method = "row counts and backup time (upper bound)"
        report["rpo_seconds"] = round(max(rpo, 0.0), 3)
        report["rpo_method"] = method
        report["lost_transactions"] = lost
        changed = source_changed(src, before, after)
        report["source_changed_during_drill"] = changed
        report["verification"] = verify(
            before, after, sanity, counts_must_match=not lost and not changed
        )
        report["verify_seconds"] = round(time.monotonic() - t1, 3)
    except Exception as exc:  # every failure must still reach the report and the metrics
        report["error"] = str(exc) if isinstance(exc, DrError) else f"{type(exc).__name__}: {exc}"
    finally:
        if created and not keep:
            try:
                admin.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")
            except Exception as exc:
                report["cleanup_error"] = f"{type(exc).__name__}: {exc}"
    return _finish(report, targets, started)
