"""`ctafleet dr`: status, restore, drill, failover. Never interactive."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path
from typing import Annotated, Any

import typer

from ctafleet.clihelp import HELP
from ctafleet.ops.dr.proc import DrError

dr_app = typer.Typer(
    **HELP,
    help="Disaster recovery: RPO/RTO status, point-in-time restore, drills, failover.",
    no_args_is_help=True,
)

Stanza = Annotated[str, typer.Option(envvar="PGBACKREST_STANZA", help="pgBackRest stanza.")]
PbConfig = Annotated[
    Path | None,
    typer.Option(
        "--pgbackrest-config",
        envvar="PGBACKREST_CONFIG",
        help="pgBackRest configuration file (default: /etc/pgbackrest/pgbackrest.conf).",
    ),
]
Repo = Annotated[
    int | None,
    typer.Option(envvar="PGBACKREST_REPO", min=1, max=256, help="Repository (default: all)."),
]
OsUserOpt = Annotated[
    str | None,
    typer.Option(
        "--os-user", help="Account PostgreSQL runs as (default: postgres when run as root)."
    ),
]
PgBin = Annotated[
    Path | None, typer.Option(help="Directory of pg_ctl (default: matches the data directory).")
]
JsonOut = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
ServerOption = Annotated[
    list[str] | None,
    typer.Option(
        "--server-option",
        help="Extra server setting as name=value (repeatable), e.g. shared_buffers=256MB.",
    ),
]


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(1)


def _pgbackrest(stanza: str, config: Path | None, repo: int | None, os_user: str | None) -> Any:
    from ctafleet.ops.dr.pgbackrest import PgBackRest
    from ctafleet.ops.dr.proc import default_os_user

    return PgBackRest(stanza=stanza, config=config, repo=repo, user=default_os_user(os_user))


def _settings_urls() -> tuple[str | None, str | None]:
    """The application's database URLs, when they are PostgreSQL ones."""
    app = os.environ.get("CTAFLEET_DATABASE__URL") or None
    admin = os.environ.get("CTAFLEET_DATABASE__ADMIN_URL") or None
    if app is None and admin is None:
        try:
            from ctafleet.config import load_settings

            settings = load_settings()
            app, admin = settings.database.url or None, settings.database.admin_url or None
        except Exception:
            return None, None

    def postgres(url: str | None) -> str | None:
        return url if url and url.startswith(("postgresql", "postgres:")) else None

    return postgres(app), postgres(admin)


def _server_options(values: list[str] | None) -> list[str]:
    out: list[str] = []
    for value in values or []:
        if "=" not in value:
            raise DrError(f"--server-option {value!r} is not name=value")
        out += ["-c", value]
    return out


def _echo_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


# --- status ---------------------------------------------------------------------------------


@dr_app.command(
    help=(
        "RPO now (age of unarchived WAL), replica lag, backup ages and the RTO of the "
        "last drill.\n\n"
        "Exits 1 when a target is breached (with --strict also when a check cannot be "
        "measured)."
    )
)
def status(
    pg_url: Annotated[
        str | None,
        typer.Option(
            help="Superuser URL of the primary (or standby) to check (default: "
            "CTAFLEET_DATABASE__ADMIN_URL, else pgBackRest's pg1-* settings)."
        ),
    ] = None,
    stanza: Stanza = "ctafleet",
    pgbackrest_config: PbConfig = None,
    repo: Repo = None,
    os_user: OsUserOpt = None,
    pgbackrest: Annotated[
        bool, typer.Option(help="Check pgBackRest backups (when it is configured).")
    ] = True,
    logical: Annotated[
        bool, typer.Option(help="Check logical backups (`ctafleet backup list`).")
    ] = True,
    drill_report: Annotated[
        list[Path] | None,
        typer.Option(help="Drill report(s) to take the RTO from (default: <data dir>/dr/*.json)."),
    ] = None,
    rpo_target: Annotated[float, typer.Option(help="RPO target, seconds.", min=0)] = 60.0,
    rto_target: Annotated[float, typer.Option(help="RTO target, seconds.", min=0)] = 300.0,
    replica_lag_target: Annotated[float, typer.Option(help="Seconds.", min=0)] = 30.0,
    logical_max_age: Annotated[
        float, typer.Option(help="Oldest acceptable logical backup, seconds.", min=0)
    ] = 26 * 3600.0,
    physical_max_age: Annotated[
        float, typer.Option(help="Oldest acceptable pgBackRest backup, seconds.", min=0)
    ] = 26 * 3600.0,
    drill_max_age: Annotated[
        float, typer.Option(help="Oldest acceptable drill, seconds.", min=0)
    ] = 100 * 86400.0,
    expect_standbys: Annotated[
        int, typer.Option(help="Streaming standbys the primary must have.", min=0)
    ] = 0,
    strict: Annotated[bool, typer.Option(help="A check that cannot be measured fails.")] = False,
    as_json: JsonOut = False,
) -> None:
    from ctafleet.ops.dr import status as st
    from ctafleet.ops.dr.postgres import Pg, parse_url
    from ctafleet.ops.dr.report import default_dir

    targets = st.StatusTargets(
        rpo_seconds=rpo_target,
        rto_seconds=rto_target,
        replica_lag_seconds=replica_lag_target,
        logical_backup_age_seconds=logical_max_age,
        physical_backup_age_seconds=physical_max_age,
        drill_age_seconds=drill_max_age,
        expect_standbys=expect_standbys,
    )
    try:
        pb = _pgbackrest(stanza, pgbackrest_config, repo, os_user) if pgbackrest else None
        if pb is not None and not pb.config_path.exists():
            pb = None
        url = pg_url or _settings_urls()[1] or _settings_urls()[0]
        info = parse_url(url) if url else (pb.pg_conninfo() if pb else None)
    except DrError as exc:
        raise _fail(str(exc)) from None
    reports = drill_report if drill_report else sorted(default_dir().glob("*.json"))
    checks = st.collect(
        pg=Pg(info) if info else None,
        pb=pb,
        drill_reports=reports,
        targets=targets,
        logical_backups=logical,
    )
    if as_json:
        _echo_json(st.as_json(checks, strict))
    else:
        typer.echo(st.render(checks))
    raise typer.Exit(st.exit_code(checks, strict))


# --- restore --------------------------------------------------------------------------------


@dr_app.command(
    help=(
        "Point-in-time restore of the stanza's cluster with pgBackRest.\n\n"
        "Checks the arguments, the repository (a backup that covers --to-time) and the "
        "archive first; then stops the server, restores (--delta), recovers to --to-time "
        "and promotes, waits until the server commits a transaction, then removes the "
        "recovery settings pgBackRest wrote into postgresql.auto.conf. Take a new full "
        "backup afterwards: the cluster is on a new timeline.\n\n"
        "Exit codes: 0 restored; 1 refused or failed before anything was changed (the "
        "server is as it was); 3 failed after the server was stopped, and the server is "
        "running again; 4 failed after the server was stopped, and the server is down."
    )
)
def restore(
    to_time: Annotated[
        str | None,
        typer.Option(help="Recovery target, ISO 8601 with offset: 2026-03-01T14:05:00Z."),
    ] = None,
    latest: Annotated[
        bool, typer.Option("--latest", help="Replay all archived WAL instead of a target time.")
    ] = False,
    stanza: Stanza = "ctafleet",
    pgbackrest_config: PbConfig = None,
    repo: Repo = None,
    os_user: OsUserOpt = None,
    pg_data: Annotated[
        Path | None, typer.Option(help="Data directory (default: the stanza's pg1-path).")
    ] = None,
    pg_url: Annotated[
        str | None,
        typer.Option(help="Superuser URL of the restored server (default: pgBackRest's pg1-*)."),
    ] = None,
    delta: Annotated[
        bool, typer.Option(help="Reuse files that match the backup (much faster).")
    ] = True,
    backup_set: Annotated[
        str | None, typer.Option("--set", help="Backup label (default: chosen by pgBackRest).")
    ] = None,
    target_timeline: Annotated[
        str | None, typer.Option(help="Timeline to follow (e.g. 1 or current).")
    ] = None,
    target_exclusive: Annotated[
        bool, typer.Option(help="Stop just before the target instead of just after.")
    ] = False,
    server_option: ServerOption = None,
    start_command: Annotated[
        str | None,
        typer.Option(
            help="Command that starts the server, e.g. 'pg_ctlcluster 15 main start' "
            "(default: pg_ctl start on the data directory)."
        ),
    ] = None,
    log_file: Annotated[Path | None, typer.Option(help="Server log of the start.")] = None,
    pg_bin: PgBin = None,
    timeout: Annotated[float, typer.Option(help="Seconds for restore and recovery.")] = 900.0,
    keep_synchronous_standbys: Annotated[
        bool,
        typer.Option(help="Keep synchronous_standby_names even with none of them connected."),
    ] = False,
    archive: Annotated[
        bool,
        typer.Option(
            help="Keep archive_mode. --no-archive for a copy restored beside production, "
            "which must not push its new timeline into the production repository."
        ),
    ] = True,
    yes: Annotated[
        bool, typer.Option("--yes", help="Overwrite the data directory (stopping its server).")
    ] = False,
    as_json: JsonOut = False,
) -> None:
    from ctafleet.ops.dr.postgres import parse_url
    from ctafleet.ops.dr.restore import RestoreFailed, restore_in_place

    if (to_time is None) == (not latest):
        raise _fail("give exactly one of --to-time T or --latest")
    try:
        try:
            start_argv = shlex.split(start_command) if start_command is not None else None
        except ValueError as exc:
            raise DrError(f"--start-command is not a valid command line: {exc}") from None
        pb = _pgbackrest(stanza, pgbackrest_config, repo, os_user)
        result = restore_in_place(
            pb,
            target_time=to_time,
            pg_data=pg_data,
            conn=parse_url(pg_url) if pg_url else None,
            delta=delta,
            backup_set=backup_set,
            target_timeline=target_timeline,
            target_exclusive=target_exclusive,
            yes=yes,
            start_options=_server_options(server_option),
            start_command=start_argv,
            log_file=log_file,
            pg_bin=pg_bin,
            timeout=timeout,
            relax_sync=not keep_synchronous_standbys,
            archive=archive,
        )
    except RestoreFailed as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(exc.exit_code) from None
    except DrError as exc:
        raise _fail(str(exc)) from None
    if as_json:
        _echo_json(result.as_dict())
        return
    typer.echo(
        f"restored {result.pg_data} to {result.target}: restore {result.restore_seconds:.1f} s, "
        f"recovery and promotion {result.startup_seconds:.1f} s, accepting writes after "
        f"{result.total_seconds:.1f} s (timeline {result.timeline})"
    )
    if result.recovered_to:
        typer.echo(f"last transaction recovered: committed at {result.recovered_to}")
    if result.removed_settings:
        typer.echo(f"removed from postgresql.auto.conf: {', '.join(result.removed_settings)}")
    for note in result.notes:
        typer.echo(f"note: {note}")
    typer.echo("next: take a full backup (pgbackrest --type=full backup): new timeline")


# --- verify ---------------------------------------------------------------------------------


@dr_app.command(
    help=(
        "Check every backup and WAL file in the repository (checksums, sizes, "
        "decryption).\n\n"
        "Exits 1 on any problem, which `pgbackrest verify` itself only prints."
    )
)
def verify(
    stanza: Stanza = "ctafleet",
    pgbackrest_config: PbConfig = None,
    repo: Repo = None,
    os_user: OsUserOpt = None,
) -> None:
    try:
        pb = _pgbackrest(stanza, pgbackrest_config, repo, os_user)
        repos = [repo] if repo else _configured_repos(pb)
        failed = []
        for number in repos:
            pb.repo = number
            ok, report = pb.verify()
            typer.echo(f"repo{number}: {'ok' if ok else 'FAILED'}\n{report}")
            if not ok:
                failed.append(number)
    except DrError as exc:
        raise _fail(str(exc)) from None
    if failed:
        raise _fail(f"verify found problems in repo{', repo'.join(map(str, failed))}")


def _configured_repos(pb: Any) -> list[int]:
    import re

    numbers = {
        int(m.group(1))
        for section in pb.sections().values()
        for key in section
        if (m := re.match(r"repo(\d+)-", key))
    }
    numbers |= {
        int(m.group(1)) for key in os.environ if (m := re.match(r"PGBACKREST_REPO(\d+)_", key))
    }
    return sorted(numbers) or [1]


# --- drill ----------------------------------------------------------------------------------


@dr_app.command(
    help=(
        "Restore the latest backup into a scratch instance, verify it against the "
        "source and measure RTO and RPO; write a JSON report and Prometheus metrics.\n\n"
        "Passes when the restore is verified and meets the RTO and the RPO target of its mode "
        "(physical: --rpo-target; logical: --logical-rpo-target, as the backup schedule "
        "bounds it). The printed verdict, the exit code (0 or 1) and "
        "ctafleet_dr_drill_success (1 or 0) always agree."
    )
)
def drill(
    mode: Annotated[
        str, typer.Option(help="physical (pgBackRest) or logical (ctafleet backup).")
    ] = "physical",
    source_url: Annotated[
        str | None,
        typer.Option(
            help="Superuser URL of the source database (default: "
            "CTAFLEET_DATABASE__ADMIN_URL, else pgBackRest's pg1-*)."
        ),
    ] = None,
    database: Annotated[
        str | None, typer.Option(help="Database to verify (default: the source URL's).")
    ] = None,
    stanza: Stanza = "ctafleet",
    pgbackrest_config: PbConfig = None,
    repo: Repo = None,
    os_user: OsUserOpt = None,
    backup_set: Annotated[
        str | None, typer.Option("--set", help="Backup label (default: the newest).")
    ] = None,
    scratch_dir: Annotated[
        Path | None,
        typer.Option(
            help="Where the scratch data directory goes (physical; default: $TMPDIR); "
            "needs room for a full restore."
        ),
    ] = None,
    scratch_url: Annotated[
        str | None,
        typer.Option(
            help="Superuser URL of the server that gets the scratch database "
            "(logical; default: the source server)."
        ),
    ] = None,
    sanity_query: Annotated[
        list[str] | None,
        typer.Option(help="SQL that must return true on the restored database (repeatable)."),
    ] = None,
    server_option: ServerOption = None,
    backup_restore_arg: Annotated[
        list[str] | None,
        typer.Option(help="Extra argument for `ctafleet backup restore` (repeatable)."),
    ] = None,
    report: Annotated[
        Path | None, typer.Option(help="JSON report (default: <data dir>/dr/drill-MODE.json).")
    ] = None,
    metrics_file: Annotated[
        Path | None,
        typer.Option(help="Prometheus text file (default: <data dir>/dr/drill-MODE.prom)."),
    ] = None,
    rpo_target: Annotated[
        float,
        typer.Option(
            help="RPO target of a physical drill, seconds (WAL archiving: archive_timeout).",
            min=0,
        ),
    ] = 60.0,
    logical_rpo_target: Annotated[
        float,
        typer.Option(
            help="RPO target of a logical drill, seconds: a restore of a dump lacks everything "
            "since the dump, so this follows the backup schedule (default 26 h: daily backups "
            "with 2 h of slack, as CTAFleetBackupStale).",
            min=0,
        ),
    ] = 26 * 3600.0,
    rto_target: Annotated[float, typer.Option(help="RTO target, seconds.", min=0)] = 300.0,
    pg_bin: PgBin = None,
    keep_scratch: Annotated[
        bool, typer.Option(help="Leave the scratch copy (stopped) for inspection.")
    ] = False,
    timeout: Annotated[float, typer.Option(help="Seconds for restore and recovery.")] = 1800.0,
    as_json: JsonOut = False,
) -> None:
    from ctafleet.ops.dr import drill as dr
    from ctafleet.ops.dr.postgres import parse_url
    from ctafleet.ops.dr.report import default_dir, write_metrics, write_report

    if mode not in ("physical", "logical"):
        raise _fail("--mode is physical or logical")
    targets = dr.Targets(
        rto_seconds=rto_target,
        rpo_seconds=rpo_target if mode == "physical" else logical_rpo_target,
    )
    try:
        url = source_url or _settings_urls()[1] or _settings_urls()[0]
        if mode == "physical":
            pb = _pgbackrest(stanza, pgbackrest_config, repo, os_user)
            source = parse_url(url) if url else pb.pg_conninfo()
            if database:
                source = source.with_database(database)
            result = dr.physical_drill(
                pb,
                source,
                targets=targets,
                scratch_parent=scratch_dir,
                backup_set=backup_set,
                sanity_queries=sanity_query or [],
                server_options=_server_options(server_option),
                pg_bin=pg_bin,
                keep=keep_scratch,
                timeout=timeout,
            )
        else:
            if not url:
                raise DrError("no source: pass --source-url or set CTAFLEET_DATABASE__ADMIN_URL")
            source = parse_url(url)
            if database:
                source = source.with_database(database)
            scratch = parse_url(scratch_url) if scratch_url else source
            result = dr.logical_drill(
                source,
                scratch.with_database((scratch.database if scratch_url else None) or "postgres"),
                targets=targets,
                sanity_queries=sanity_query or [],
                restore_args=backup_restore_arg or [],
                keep=keep_scratch,
            )
    except DrError as exc:
        raise _fail(str(exc)) from None
    report_path = report or default_dir() / f"drill-{mode}.json"
    metrics_path = metrics_file or default_dir() / f"drill-{mode}.prom"
    write_report(report_path, result)
    write_metrics(metrics_path, result)
    if as_json:
        _echo_json(result)
    else:
        _print_drill(result, report_path, metrics_path)
    raise typer.Exit(0 if result["success"] else 1)


def _print_drill(result: dict[str, Any], report_path: Path, metrics_path: Path) -> None:
    verdict = "PASSED" if result["success"] else "FAILED"
    typer.echo(f"{result['mode']} drill {verdict} in {result.get('duration_seconds')} s")
    for failure in result.get("failures", []):
        typer.echo(f"failed: {failure}")
    backup = result.get("backup", {})
    typer.echo(f"backup: {backup.get('label') or backup.get('id')}")
    targets = result["targets"]
    for key, met in (("rto", "rto_met"), ("rpo", "rpo_met")):
        value = result.get(f"{key}_seconds")
        shown = "-" if value is None else f"{value:.1f} s"
        flag = "ok" if result.get(met) else "MISSED"
        typer.echo(f"{key.upper()}: {shown} (target {targets[f'{key}_seconds']:.0f} s) {flag}")
    verification = result.get("verification") or {}
    if verification:
        typer.echo(
            f"verified {verification['tables_compared']} table(s), "
            f"{verification['rows_restored']}/{verification['rows_source']} rows"
        )
        for problem in verification.get("problems", []):
            typer.echo(f"problem: {problem}")
    typer.echo(f"report: {report_path}\nmetrics: {metrics_path}")


# --- failover -------------------------------------------------------------------------------


@dr_app.command(
    help=(
        "Promote a streaming standby, check it commits, and print the application's new "
        "database settings (or write them to --write-env)."
    )
)
def failover(
    standby_url: Annotated[str, typer.Option(help="Superuser URL of the standby to promote.")],
    standby_data: Annotated[
        Path | None,
        typer.Option(
            help="The standby's data directory, to promote with pg_ctl on this host "
            "(default: SELECT pg_promote() over --standby-url)."
        ),
    ] = None,
    old_primary_url: Annotated[
        str | None,
        typer.Option(help="URL of the failed primary: refuse while it still accepts writes."),
    ] = None,
    app_url: Annotated[
        str | None, typer.Option(help="Current application URL (default: CTAFLEET_DATABASE__URL).")
    ] = None,
    admin_url: Annotated[
        str | None,
        typer.Option(help="Current admin URL (default: CTAFLEET_DATABASE__ADMIN_URL)."),
    ] = None,
    new_host: Annotated[
        str | None,
        typer.Option(
            help="Host the application reaches the new primary at (default: the standby URL's)."
        ),
    ] = None,
    new_port: Annotated[int | None, typer.Option(help="Its port.", min=1, max=65535)] = None,
    write_env: Annotated[
        Path | None, typer.Option(help="Write the new URLs into this env file (mode 0600).")
    ] = None,
    os_user: OsUserOpt = None,
    pg_bin: PgBin = None,
    keep_synchronous_standbys: Annotated[
        bool,
        typer.Option(help="Keep synchronous_standby_names even with none of them connected."),
    ] = False,
    force: Annotated[
        bool, typer.Option(help="Promote even though the old primary still accepts writes.")
    ] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the promotion.")] = 120.0,
    as_json: JsonOut = False,
) -> None:
    from ctafleet.ops.dr.failover import failover as do_failover
    from ctafleet.ops.dr.postgres import LocalServer, parse_url
    from ctafleet.ops.dr.proc import default_os_user

    current_app, current_admin = _settings_urls()
    try:
        server = (
            LocalServer(standby_data, default_os_user(os_user), pg_bin=pg_bin)
            if standby_data
            else None
        )
        result = do_failover(
            parse_url(standby_url),
            app_url=app_url or current_app,
            admin_url=admin_url or current_admin,
            new_host=new_host,
            new_port=new_port,
            server=server,
            old_primary=parse_url(old_primary_url) if old_primary_url else None,
            force=force,
            relax_sync=not keep_synchronous_standbys,
            timeout=timeout,
            write_env=write_env,
        )
    except DrError as exc:
        raise _fail(str(exc)) from None
    if as_json:
        _echo_json(result.as_dict())
        return
    typer.echo(
        f"promoted {result.standby} in {result.promote_seconds:.2f} s; accepting writes after "
        f"{result.writable_seconds:.2f} s (timeline {result.timeline})"
    )
    if result.env:
        typer.echo("application configuration change (passwords unchanged, shown as ***):")
        for key, value in result.env.items():
            typer.echo(f"  {key}={value}")
    for note in result.notes:
        typer.echo(f"note: {note}")
