"""`ctafleet backup`: create, list, verify, restore and prune logical backups; keygen.

Contract relied on by scripts and by `ctafleet dr`:

- `create` prints the new backup's id as the last line of stdout; progress goes to stderr.
- `list --json` prints a JSON list of manifests, newest first.
- `restore [BACKUP_ID | --latest] --target-url URL [--force] [--yes]` exits 0 on success; it
  refuses a non-empty target without `--force`, and never prompts when `--yes` is given (nor
  waits for an answer without a terminal: it refuses instead).
- Exit codes: 0 success, 1 failure, 2 usage or settings, 3 refused target, 4 integrity.

Every failure of `create`, `verify`, `restore` and `prune` is counted in the metrics and sent
to the configured webhook/e-mail.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from pydantic import ValidationError

from ctafleet.clihelp import HELP
from ctafleet.config import Settings
from ctafleet.ops.backup.errors import BackupError, ConfigurationError, TargetNotEmptyError
from ctafleet.ops.backup.metrics import BackupMetrics
from ctafleet.ops.notify import notify_backup

T = TypeVar("T")

backup_app = typer.Typer(
    **HELP,
    help="Logical backups (pg_dump / SQLite online backup, zstd, age): create, list, verify, "
    "restore, prune.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

BackupIdArg = Annotated[
    str | None, typer.Argument(help="Backup id, as printed by `create` and `list`.")
]
LatestOpt = Annotated[bool, typer.Option("--latest", help="The newest complete backup.")]
IdentityOpt = Annotated[
    Path | None,
    typer.Option(
        "--identity",
        help="age identity (private key) file. Default: CTAFLEET_BACKUP__IDENTITY_FILE.",
        dir_okay=False,
    ),
]
ScratchDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--scratch-dir",
        help="Directory for temporary files. Default: CTAFLEET_BACKUP__SCRATCH_DIR, else the "
        "system temporary directory.",
        file_okay=False,
    ),
]
MetricsFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--metrics-file",
        help="Prometheus text file to update (node-exporter textfile collector, `*.prom`). "
        "Default: CTAFLEET_BACKUP__METRICS_FILE.",
        dir_okay=False,
    ),
]


def _echo_err(message: str) -> None:
    typer.echo(message, err=True)


def _exit(message: str, code: int) -> NoReturn:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _settings() -> Settings:
    from ctafleet.config import format_validation_error, load_settings, settings_problems

    try:
        return load_settings()
    except ValidationError as exc:
        for line in settings_problems() or format_validation_error(exc):
            typer.secho(f"error: {line}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None


def _backups(settings: Settings) -> Any:
    from ctafleet.ops.backup.service import Backups
    from ctafleet.storage import StorageError, open_store

    try:
        store = open_store(settings)
    except StorageError as exc:
        _exit(str(exc), 2)
    return Backups(settings, store, progress=_echo_err)


@contextlib.contextmanager
def _interruptible() -> Iterator[None]:
    """SIGTERM (a Job's deadline, `systemctl stop`) unwinds like Ctrl-C, so the temporary
    databases and files are removed on the way out."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(_signum: int, _frame: Any) -> None:
        # Inside asyncio.run the loop stops and asyncio.run cancels the pending task, whose
        # `finally` blocks (which await: DROP DATABASE) still run before this propagates.
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _describe(exc: BaseException) -> tuple[str, int]:
    from ctafleet.storage import StorageError

    if isinstance(exc, BackupError):
        return str(exc), exc.exit_code
    if isinstance(exc, StorageError):
        return str(exc), 1
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted", 130
    return f"unexpected error: {type(exc).__name__}: {exc}", 1


def _observed(
    settings: Settings,
    operation: str,
    run: Callable[[], T],
    *,
    metrics: BackupMetrics | None = None,
    on_failure: Callable[[BackupMetrics], None] | None = None,
    backup_id: str | None = None,
) -> T:
    """Run one command; on failure count it, notify, and exit with the error's code."""
    try:
        with _interruptible():
            return run()
    except typer.Exit:
        raise
    except (Exception, KeyboardInterrupt) as exc:
        message, code = _describe(exc)
        warnings: list[str] = []
        if metrics is not None and on_failure is not None:
            on_failure(metrics)
            warnings += metrics.publish()
        if code != TargetNotEmptyError.exit_code:
            # A refused target is the operator's answer, not a failure of the backups.
            warnings += notify_backup(
                settings,
                operation=operation,
                ok=False,
                when=datetime.now(UTC),
                backup_id=backup_id,
                error=message,
            )
        for warning in warnings:
            _echo_err(f"warning: {warning}")
        _exit(message, code)


def _succeeded(
    settings: Settings,
    operation: str,
    *,
    metrics: BackupMetrics | None = None,
    backup_id: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    warnings = metrics.publish() if metrics is not None else []
    warnings += notify_backup(
        settings,
        operation=operation,
        ok=True,
        when=datetime.now(UTC),
        backup_id=backup_id,
        details=details,
    )
    for warning in warnings:
        _echo_err(f"warning: {warning}")


def _metrics(settings: Settings, metrics_file: Path | None) -> BackupMetrics:
    return BackupMetrics(
        metrics_file or settings.backup.metrics_file or None, settings.backup.pushgateway_url
    )


@backup_app.command("create")
def create(
    database_url: Annotated[
        str,
        typer.Option(
            "--database-url",
            help="Database to back up. Default: CTAFLEET_DATABASE__ADMIN_URL, else "
            "CTAFLEET_DATABASE__URL (the embedded SQLite file when both are empty).",
        ),
    ] = "",
    scratch_dir: ScratchDirOpt = None,
    metrics_file: MetricsFileOpt = None,
) -> None:
    """Back up the database: dump, compress, encrypt to the public key, store with a manifest.

    Prints the backup id on the last line of stdout.
    """
    settings = _settings()
    metrics = _metrics(settings, metrics_file)

    def run() -> Any:
        backups = _backups(settings)
        return asyncio.run(
            backups.create(
                database_url or None, scratch_dir=str(scratch_dir) if scratch_dir else None
            )
        )

    manifest = _observed(
        settings,
        "create",
        run,
        metrics=metrics,
        on_failure=lambda m: m.backup_failed(),
    )
    metrics.backup_succeeded(
        finished=manifest.finished_at.timestamp(),
        size=manifest.object.size,
        duration=manifest.duration_seconds,
    )
    _succeeded(
        settings,
        "create",
        metrics=metrics,
        backup_id=manifest.id,
        details={"size": manifest.object.size, "rows": manifest.total_rows},
    )
    typer.echo(manifest.id)


@backup_app.command("list")
def list_(
    as_json: Annotated[
        bool, typer.Option("--json", help="A JSON list of the manifests, newest first.")
    ] = False,
) -> None:
    """List the complete backups, newest first."""
    settings = _settings()
    backups = _backups(settings)
    warnings: list[str] = []
    try:
        manifests = backups.manifests(warnings)
    except BackupError as exc:
        _exit(str(exc), exc.exit_code)
    for warning in warnings:
        _echo_err(f"warning: {warning}")
    if as_json:
        from ctafleet.ops.backup.service import manifest_json

        typer.echo(json.dumps(manifest_json(manifests), indent=2))
        return
    if not manifests:
        _echo_err(f"no backups in {backups.store.description}")
        return
    header = f"{'ID':<24} {'FINISHED (UTC)':<20} {'KIND':<10} {'SIZE':>12} {'ROWS':>10}  REVISION"
    typer.echo(header)
    for m in manifests:
        finished = m.finished_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
        typer.echo(
            f"{m.id:<24} {finished:<20} {m.database_kind:<10} {m.object.size:>12} "
            f"{m.total_rows:>10}  {m.schema_revision or '-'}"
        )


@backup_app.command("verify")
def verify(
    backup_id: BackupIdArg = None,
    latest: LatestOpt = False,
    identity: IdentityOpt = None,
    scratch_url: Annotated[
        str,
        typer.Option(
            "--scratch-url",
            help="PostgreSQL server for the scratch database (created and dropped). Default: "
            "CTAFLEET_BACKUP__SCRATCH_DATABASE_URL, else the server of the admin URL.",
        ),
    ] = "",
    scratch_dir: ScratchDirOpt = None,
    metrics_file: MetricsFileOpt = None,
) -> None:
    """Download, check, decrypt and restore a backup into a scratch database; compare it with
    the manifest (row counts and per-table checksums) and run sanity queries."""
    settings = _settings()
    metrics = _metrics(settings, metrics_file)

    def run() -> Any:
        from ctafleet.ops.backup.service import load_identities

        backups = _backups(settings)
        identities = load_identities(identity or settings.backup.identity_file)
        manifest = backups.resolve(backup_id, latest=latest)
        return asyncio.run(
            backups.verify(
                manifest,
                identities,
                scratch_url=scratch_url or None,
                scratch_dir=str(scratch_dir) if scratch_dir else None,
            )
        )

    report = _observed(
        settings,
        "verify",
        run,
        metrics=metrics,
        on_failure=lambda m: m.verify_failed(),
        backup_id=backup_id,
    )
    metrics.verify_succeeded(finished=datetime.now(UTC).timestamp())
    _succeeded(
        settings,
        "verify",
        metrics=metrics,
        backup_id=report.backup_id,
        details={"tables": report.tables, "rows": report.rows, "seconds": report.seconds},
    )
    typer.echo(
        f"ok: backup {report.backup_id} restored and matches its manifest: {report.tables} "
        f"tables, {report.rows} rows, {report.seconds:.1f} s"
    )


def _confirmer(yes: bool) -> Callable[[str], bool]:
    def confirm(question: str) -> bool:
        if yes:
            return True
        if not sys.stdin.isatty():
            raise TargetNotEmptyError(
                f"{question} needs confirmation and there is no terminal to ask: pass --yes"
            )
        return bool(typer.confirm(question, default=False))

    return confirm


@backup_app.command("restore")
def restore(
    target_url: Annotated[
        str,
        typer.Option(
            "--target-url",
            help="Database to restore into: postgresql://user@host/db (created if missing) or "
            "sqlite:///path/file.db.",
        ),
    ],
    backup_id: BackupIdArg = None,
    latest: LatestOpt = False,
    force: Annotated[
        bool, typer.Option("--force", help="Replace a target that is not empty.")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", help="Never ask for confirmation.")] = False,
    identity: IdentityOpt = None,
    jobs: Annotated[
        int,
        typer.Option(
            "--jobs",
            min=1,
            max=32,
            help="Parallel pg_restore jobs; above 1 the decrypted dump is written to the "
            "scratch directory first.",
        ),
    ] = 1,
    no_owner: Annotated[
        bool,
        typer.Option(
            "--no-owner",
            help="Do not restore ownership and grants (the target server lacks the roles); "
            "run `ctafleet db upgrade` afterwards to grant the application role.",
        ),
    ] = False,
    scratch_dir: ScratchDirOpt = None,
) -> None:
    """Restore a backup into a database, through a temporary database (or file) that must
    match the manifest before it replaces the target."""
    settings = _settings()

    def run() -> Any:
        from ctafleet.ops.backup.service import load_identities

        backups = _backups(settings)
        identities = load_identities(identity or settings.backup.identity_file)
        manifest = backups.resolve(backup_id, latest=latest)
        if not target_url:
            raise ConfigurationError("--target-url is empty")
        return asyncio.run(
            backups.restore(
                manifest,
                target_url,
                identities,
                force=force,
                confirm=_confirmer(yes),
                jobs=jobs,
                no_owner=no_owner,
                scratch_dir=str(scratch_dir) if scratch_dir else None,
            )
        )

    report = _observed(settings, "restore", run, backup_id=backup_id)
    for warning in report.warnings:
        _echo_err(f"warning: {warning}")
    _succeeded(
        settings,
        "restore",
        backup_id=report.backup_id,
        details={"target": report.target, "rows": report.rows, "seconds": report.seconds},
    )
    typer.echo(
        f"ok: backup {report.backup_id} restored into {report.target}: {report.tables} tables, "
        f"{report.rows} rows, {report.seconds:.1f} s"
    )


@backup_app.command("prune")
def prune(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only print what would be deleted.")
    ] = False,
    retention_days: Annotated[
        int | None,
        typer.Option(min=1, help="Keep backups younger than this. Default: the setting (30)."),
    ] = None,
    keep_daily: Annotated[
        int | None, typer.Option(min=0, help="Also keep the newest backup of N days.")
    ] = None,
    keep_weekly: Annotated[
        int | None, typer.Option(min=0, help="Also keep the newest backup of N weeks.")
    ] = None,
    keep_monthly: Annotated[
        int | None, typer.Option(min=0, help="Also keep the newest backup of N months.")
    ] = None,
) -> None:
    """Delete backups the retention policy no longer keeps (never the newest one)."""
    settings = _settings()

    def run() -> Any:
        backups = _backups(settings)
        report = backups.prune(
            dry_run=dry_run,
            retention_days=retention_days,
            keep_daily=keep_daily,
            keep_weekly=keep_weekly,
            keep_monthly=keep_monthly,
        )
        if report.errors:
            raise BackupError("could not delete:" + "".join(f"\n  {e}" for e in report.errors))
        return report

    report = _observed(settings, "prune", run)
    verb = "would delete" if dry_run else "deleted"
    for backup_id in report.deleted:
        typer.echo(f"{verb} {backup_id}")
    for key in report.orphans_deleted:
        typer.echo(f"{verb} incomplete {key}")
    _succeeded(
        settings,
        "prune",
        details={"kept": len(report.kept), "deleted": len(report.deleted)},
    )
    typer.echo(f"kept {len(report.kept)} backups, {verb} {len(report.deleted)}")


@backup_app.command("keygen")
def keygen(
    output: Annotated[
        Path,
        typer.Option(
            "--output",
            "-o",
            help="File for the private key (created with mode 0600; must not exist).",
            dir_okay=False,
        ),
    ],
) -> None:
    """Create an age key pair: the private key goes to --output, the public key (for
    CTAFLEET_BACKUP__AGE_RECIPIENT) is printed. Run it where the private key will live."""
    from ctafleet.ops.backup import crypto

    secret, public = crypto.generate()
    created = datetime.now(UTC).replace(microsecond=0).isoformat()
    try:
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        _exit(f"{output} already exists; refusing to overwrite a private key", 2)
    except OSError as exc:
        _exit(f"cannot create {output}: {exc.strerror}", 1)
    with os.fdopen(fd, "w") as out:
        out.write(f"# created: {created}\n# public key: {public}\n{secret}\n")
    _echo_err(f"private key written to {output}; keep it off the backup host")
    typer.echo(public)


if __name__ == "__main__":  # pragma: no cover
    backup_app(prog_name="ctafleet backup")
