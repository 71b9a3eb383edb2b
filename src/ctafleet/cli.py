"""The `ctafleet` command."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from ctafleet import __version__
from ctafleet.clihelp import HELP
from ctafleet.ops.backup.cli import backup_app
from ctafleet.ops.certs.cli import ops_app
from ctafleet.ops.dr.cli import dr_app
from ctafleet.telematics.cli import mqtt, simulate

app = typer.Typer(
    **HELP,
    help="CTAFleet: fleet management platform.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(
    **HELP, help="Database schema: upgrade, current revision, drift check.", no_args_is_help=True
)
tenants_app = typer.Typer(**HELP, help="Organisations (tenants).", no_args_is_help=True)
users_app = typer.Typer(**HELP, help="Users of a tenant.", no_args_is_help=True)
config_app = typer.Typer(
    **HELP, help="Settings: validate, generate the reference.", no_args_is_help=True
)
permissions_app = typer.Typer(**HELP, help="Roles and permissions.", no_args_is_help=True)
fleet_app = typer.Typer(
    **HELP, help="Fleet data: import vehicles and drivers from CSV.", no_args_is_help=True
)
app.add_typer(db_app, name="db")
app.add_typer(tenants_app, name="tenants")
app.add_typer(users_app, name="users")
app.add_typer(config_app, name="config")
app.add_typer(permissions_app, name="permissions")
telemetry_app = typer.Typer(**HELP, help="Positions: retention.", no_args_is_help=True)
app.add_typer(fleet_app, name="fleet")
app.add_typer(telemetry_app, name="telemetry")
app.add_typer(backup_app, name="backup")
app.add_typer(dr_app, name="dr")
app.add_typer(ops_app, name="ops")
app.command("simulate")(simulate)
app.command("mqtt")(mqtt)


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code)


def _settings(env_file: Path | None = None, **overrides: Any) -> Any:
    from ctafleet.config import (
        SettingsFileError,
        format_validation_error,
        load_settings,
        settings_problems,
    )

    try:
        return load_settings(env_file, **overrides)
    except SettingsFileError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None
    except ValidationError as exc:
        for line in settings_problems(env_file, **overrides) or format_validation_error(exc):
            typer.secho(f"error: {line}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None


def _print_version(value: bool) -> None:
    if value:
        typer.echo(__version__)
        raise typer.Exit(0)


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            help="Print the version and exit.",
            # Eager: handled while parsing, before the group insists on a command.
            callback=_print_version,
            is_eager=True,
        ),
    ] = False,
) -> None:
    pass


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.", min=1, max=65535)] = 8000,
    proxy_headers: Annotated[
        bool,
        typer.Option(
            help="Trust X-Forwarded-* from --forwarded-allow-ips (behind a reverse proxy)."
        ),
    ] = False,
    forwarded_allow_ips: Annotated[
        str, typer.Option(help="Proxies trusted for X-Forwarded-*.")
    ] = "127.0.0.1",
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            max=64,
            help="Worker processes behind the port; with more than one, /metrics aggregates "
            "them through PROMETHEUS_MULTIPROC_DIR (made fresh here if unset).",
        ),
    ] = 1,
    osmand_port: Annotated[
        int,
        typer.Option(
            min=0,
            max=65535,
            help="Also accept OsmAnd device messages on this port, on any path and method "
            "(Traccar's 5055 for trackers configured that way; 0: none). /ingest/osmand on the "
            "API port works either way.",
        ),
    ] = 0,
) -> None:
    """Run the API server: the REST API, its docs (/api/docs), health and metrics."""
    import uvicorn

    settings = _settings()
    if osmand_port and workers > 1:
        raise _fail("--osmand-port needs --workers 1 (run more replicas to scale instead)")
    if osmand_port == port:
        raise _fail("--osmand-port must differ from --port")
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "proxy_headers": proxy_headers,
        "forwarded_allow_ips": forwarded_allow_ips,
        "log_config": None,
        "server_header": False,
    }
    if workers == 1:
        from ctafleet.app import create_app

        api = create_app(settings)
        if not osmand_port:
            uvicorn.run(api, **options)
            return
        problem = _port_problem(host, osmand_port)
        if problem:
            raise _fail(f"cannot listen on {host}:{osmand_port}: {problem}")
        osmand = api.state.ctafleet.telemetry.osmand
        servers = [
            uvicorn.Server(uvicorn.Config(api, **options)),
            # The endpoint alone, sharing the API's queue and device authentication.
            uvicorn.Server(
                uvicorn.Config(osmand, **{**options, "port": osmand_port}, lifespan="off")
            ),
        ]
        asyncio.run(_serve_together(servers))
        return
    _multiprocess_metrics_dir(settings.data_dir)
    # Several processes need an import string; each builds the app from the same environment.
    uvicorn.run("ctafleet.app:create_app", factory=True, workers=workers, **options)


async def _serve_together(servers: list[Any]) -> None:
    """Run the servers until one of them stops (a signal reaches whichever installed its
    handler last), then stop the others."""
    tasks = [asyncio.create_task(server.serve()) for server in servers]
    await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for server in servers:
        server.should_exit = True
    await asyncio.gather(*tasks)


def _multiprocess_metrics_dir(data_dir: Path) -> None:
    """prometheus-client's multiprocess mode needs an empty directory shared by the workers."""
    import shutil

    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not path:
        path = str((data_dir / "metrics-multiproc").resolve())
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    shutil.rmtree(path, ignore_errors=True)  # stale files of dead workers would be summed
    Path(path).mkdir(parents=True, exist_ok=True)


@app.command()
def demo(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.", min=1, max=65535)] = 8000,
    vehicles: Annotated[
        int, typer.Option(help="Vehicles in the demo fleet.", min=1, max=5000)
    ] = 50,
    no_serve: Annotated[bool, typer.Option("--no-serve", help="Set up and exit.")] = False,
    no_simulate: Annotated[
        bool, typer.Option("--no-simulate", help="Serve without driving the demo fleet.")
    ] = False,
) -> None:
    """Everything on the embedded default: migrate, seed a demo tenant, serve, and drive the
    demo fleet through the OsmAnd endpoint."""
    from ctafleet.config import with_signing_key
    from ctafleet.db.engine import Database
    from ctafleet.db.migrate import upgrade
    from ctafleet.demo import CREDENTIALS_FILE, seed
    from ctafleet.kernel.clock import SystemClock

    settings = with_signing_key(_settings())
    if not no_serve:
        # Before the minutes of set-up, not after: a port in use is found at once.
        problem = _port_problem(host, port)
        if problem:
            raise _fail(
                f"cannot listen on {host}:{port}: {problem}. Stop what uses it, or choose "
                f"another port: `make demo PORT={port + 1}` (or `ctafleet demo --port "
                f"{port + 1}`)"
            )

    async def setup() -> dict[str, Any]:
        typer.echo("migrating the database...")
        await upgrade(settings.database_admin_url, app_role=settings.database.app_role)
        db = Database(settings.database_url, settings)
        try:
            typer.echo(f"seeding the demo tenant ({vehicles} vehicles)...")
            return await seed(db, settings, SystemClock(), vehicles=vehicles)
        finally:
            await db.dispose()

    creds = asyncio.run(setup())
    credentials = (settings.data_dir / CREDENTIALS_FILE).resolve()
    typer.echo("")
    if not no_serve:
        url = f"http://{host}:{port}"
        typer.echo(f"CTAFleet demo: {url}  (API docs: {url}/api/docs)")
    typer.echo(f"Data directory: {settings.data_dir.resolve()}")
    typer.echo(f"Demo users (tenant 'demo'), also in {credentials}:")
    for user in creds.get("users", []):
        typer.echo(f"  {user['role']:<14} {user['email']:<34} {user['password']}")
    typer.echo(
        "Log in at POST /api/v1/auth/login; access tokens last "
        f"{settings.auth.access_token_ttl_s // 60} minutes (renew with POST /api/v1/auth/refresh)."
    )
    typer.echo("")
    if no_serve:
        return
    import contextlib

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_and_drive(settings, host=host, port=port, drive=not no_simulate))


async def _serve_and_drive(settings: Any, *, host: str, port: int, drive: bool) -> None:
    """Serve the app and, once it listens, drive the demo fleet against it."""
    import contextlib
    import logging

    import uvicorn

    from ctafleet.app import create_app
    from ctafleet.demo import drive_fleet
    from ctafleet.telematics.simulate import SimulationError

    config = uvicorn.Config(
        create_app(settings), host=host, port=port, log_config=None, server_header=False
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    driving: asyncio.Task[None] | None = None
    if drive:
        # uvicorn offers a flag, not an event, for "listening".
        while not server.started and not serving.done():  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        if server.started:
            logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per fix otherwise
            wildcard = host in ("", "0.0.0.0", "::")  # noqa: S104 (a comparison, not a bind)
            local = "127.0.0.1" if wildcard else host
            local = f"[{local}]" if ":" in local else local
            driving = asyncio.create_task(drive_fleet(settings, url=f"http://{local}:{port}"))

            def report(task: asyncio.Task[None]) -> None:
                if not task.cancelled() and isinstance(task.exception(), SimulationError):
                    typer.secho(f"demo fleet stopped: {task.exception()}", err=True)

            driving.add_done_callback(report)
            typer.echo("the demo fleet is driving (positions every ~5 s; --no-simulate to stop)")
    try:
        await serving
    finally:
        if driving is not None:
            driving.cancel()
            with contextlib.suppress(asyncio.CancelledError, SimulationError):
                await driving


@app.command()
def worker(
    metrics_host: Annotated[str, typer.Option(help="Address of the metrics listener.")] = (
        "127.0.0.1"
    ),
    metrics_port: Annotated[
        int,
        typer.Option(help="Serve Prometheus metrics on this port (0: none).", min=0, max=65535),
    ] = 0,
) -> None:
    """Drain the telemetry queue (Redis) into the database; several workers share the shards.

    SIGTERM or Ctrl-C finish and commit the batch in hand, then give the shards back."""
    settings = _settings()
    if not settings.redis.url:
        raise _fail(
            "the worker consumes the Redis queue: set CTAFLEET_REDIS__URL (without Redis, "
            "`ctafleet serve` runs its worker in-process)"
        )
    from ctafleet.observability import metrics
    from ctafleet.observability.logging import configure_logging
    from ctafleet.telematics.ingest import process

    configure_logging(settings)
    metrics.set_build_info("worker")
    if metrics_port:
        problem = _port_problem(metrics_host, metrics_port)
        if problem:
            raise _fail(f"cannot listen on {metrics_host}:{metrics_port}: {problem}")
        from prometheus_client import start_http_server

        start_http_server(metrics_port, addr=metrics_host, registry=metrics.REGISTRY)
    process.run_until_signalled(settings)


def _port_problem(host: str, port: int) -> str | None:
    """Why the server could not listen there, or None (the socket is closed again at once)."""
    import errno
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return f"unknown address ({exc.strerror})"
    family, kind, proto, _name, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return "the port is already in use"
            return exc.strerror or str(exc)
    return None


# --- db ----------------------------------------------------------------------------------


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
) -> None:
    """Migrate the database (as the table owner) and grant the application role."""
    from ctafleet.db.migrate import upgrade

    settings = _settings()
    try:
        rev = asyncio.run(
            upgrade(settings.database_admin_url, revision, settings.database.app_role)
        )
    except Exception as exc:
        raise _fail(f"migration failed: {type(exc).__name__}: {exc}") from None
    typer.echo(f"database at revision {rev}")


@db_app.command("current")
def db_current() -> None:
    """Print the database's revision and the code's head."""
    from ctafleet.db.migrate import head_revision, revision_of

    settings = _settings()
    rev = asyncio.run(revision_of(settings.database_admin_url))
    head = head_revision()
    typer.echo(f"current: {rev or '(empty database)'}\nhead:    {head}")


@db_app.command("check")
def db_check() -> None:
    """Fail unless the database is at head and matches the models (no drift)."""
    from ctafleet.db.migrate import drift, head_revision, revision_of
    from ctafleet.domains import metadata

    settings = _settings()
    url = settings.database_admin_url
    rev, head = asyncio.run(revision_of(url)), head_revision()
    if rev != head:
        raise _fail(f"database at {rev or 'nothing'}, code at {head}: run `ctafleet db upgrade`")
    diffs = asyncio.run(drift(url, metadata()))
    if diffs:
        for d in diffs:
            typer.echo(f"  drift: {d}", err=True)
        raise _fail("the database schema differs from the models")
    typer.echo(f"ok: revision {rev}, no drift")


# --- tenants and users -------------------------------------------------------------------


@tenants_app.command("create")
def tenants_create(
    slug: Annotated[
        str, typer.Argument(help="Short unique name: lowercase letters, digits, dashes.")
    ],
    name: Annotated[str, typer.Option(help="Display name.")] = "",
    units: Annotated[str, typer.Option(help="metric or imperial.")] = "metric",
    timezone: Annotated[str, typer.Option(help="IANA time zone.")] = "UTC",
    currency: Annotated[str, typer.Option(help="ISO 4217 code.")] = "USD",
) -> None:
    """Create an organisation."""
    from ctafleet.db.engine import Database
    from ctafleet.kernel.errors import DomainError
    from ctafleet.tenants.service import create_tenant

    settings = _settings()

    async def run() -> Any:
        db = Database(settings.database_url, settings)
        try:
            async with db.system_session() as session:
                return await create_tenant(
                    session=session,
                    slug=slug,
                    name=name or slug,
                    display_units=units,
                    timezone=timezone,
                    currency=currency,
                )
        finally:
            await db.dispose()

    try:
        tenant = asyncio.run(run())
    except DomainError as exc:
        raise _fail(exc.detail) from None
    typer.echo(f"created tenant {tenant.slug} ({tenant.id})")


def _read_password() -> str:
    env = os.environ.get("CTAFLEET_PASSWORD")
    if env:
        return env
    if sys.stdin.isatty():
        first = typer.prompt("Password", hide_input=True)
        if typer.prompt("Repeat", hide_input=True) != first:
            raise _fail("the passwords differ")
        return str(first)
    line = sys.stdin.readline().rstrip("\n")
    if not line:
        raise _fail("no password: pipe it on stdin or set CTAFLEET_PASSWORD")
    return line


@users_app.command("create")
def users_create(
    tenant: Annotated[str, typer.Option(help="Tenant slug.")],
    email: Annotated[str, typer.Option(help="Login e-mail.")],
    role: Annotated[
        str,
        typer.Option(help="admin, fleet_manager, dispatcher, mechanic, driver, viewer or auditor."),
    ],
    name: Annotated[str, typer.Option(help="Full name.")] = "",
) -> None:
    """Create a user. The password comes from stdin or CTAFLEET_PASSWORD, never an argument."""
    from ctafleet.auth.schemas import UserCreate
    from ctafleet.auth.users import create_user
    from ctafleet.db.engine import Database
    from ctafleet.kernel.context import Actor
    from ctafleet.kernel.errors import DomainError
    from ctafleet.tenants.service import find_tenant

    settings = _settings()
    password = _read_password()
    try:
        data = UserCreate(email=email, role=role, full_name=name, password=password)
    except ValidationError as exc:
        raise _fail(
            "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        ) from None

    async def run() -> Any:
        db = Database(settings.database_url, settings)
        try:
            async with db.system_session() as session:
                found = await find_tenant(session=session, slug=tenant)
            if found is None:
                raise _fail(f"no tenant {tenant!r}")
            actor = Actor.system(found.id)
            async with db.session(actor) as session:
                return await create_user(
                    session=session, actor=actor, settings=settings.auth, data=data
                )
        finally:
            await db.dispose()

    try:
        user = asyncio.run(run())
    except DomainError as exc:
        raise _fail(exc.detail) from None
    typer.echo(f"created user {user.email} ({user.role}) in {tenant}")


@fleet_app.command("import")
def fleet_import(
    kind: Annotated[str, typer.Argument(help="vehicles or drivers.")],
    file: Annotated[
        Path, typer.Argument(help="CSV file with a header row.", exists=True, dir_okay=False)
    ],
    tenant: Annotated[str, typer.Option(help="Tenant slug.")],
    dry_run: Annotated[bool, typer.Option(help="Check and count; write nothing.")] = False,
) -> None:
    """Import a CSV file: every row or none, matched on VIN or employee number."""
    from ctafleet.db.engine import Database
    from ctafleet.fleet import imports
    from ctafleet.kernel.context import Actor
    from ctafleet.kernel.errors import DomainError
    from ctafleet.tenants.service import find_tenant

    if kind not in ("vehicles", "drivers"):
        raise _fail("the kind is vehicles or drivers")
    settings = _settings()
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise _fail(f"{file} is not UTF-8 text (byte {exc.start})") from None
    run_import = imports.import_vehicles if kind == "vehicles" else imports.import_drivers

    async def run() -> Any:
        db = Database(settings.database_url, settings)
        try:
            async with db.system_session() as session:
                found = await find_tenant(session=session, slug=tenant)
            if found is None:
                raise _fail(f"no tenant {tenant!r}")
            actor = Actor.system(found.id)
            async with db.session(actor) as session:
                return await run_import(session=session, actor=actor, text=text, dry_run=dry_run)
        finally:
            await db.dispose()

    try:
        result = asyncio.run(run())
    except imports.ImportRefused as exc:
        for error in exc.errors[:200]:
            where = f"row {error.row}" + (f", {error.field}" if error.field else "")
            typer.secho(f"  {where}: {error.message}", fg=typer.colors.RED, err=True)
        if len(exc.errors) > 200:
            typer.echo(f"  ... and {len(exc.errors) - 200} more", err=True)
        raise _fail(exc.detail) from None
    except DomainError as exc:
        raise _fail(exc.detail) from None
    verb = "would import" if dry_run else "imported"
    typer.echo(
        f"{verb} {kind}: {result.created} created, {result.updated} updated, "
        f"{result.unchanged} unchanged"
    )


@telemetry_app.command("prune")
def telemetry_prune(
    dry_run: Annotated[
        bool, typer.Option(help="Say what would be deleted; delete nothing.")
    ] = False,
    chunk: Annotated[
        int,
        typer.Option(min=1, max=1_000_000, help="Positions deleted per transaction."),
    ] = 10_000,
) -> None:
    """Delete positions older than each tenant's retention (drops whole monthly partitions on
    PostgreSQL, deletes in chunks otherwise). Safe beside running ingest; run it daily."""
    from ctafleet.db.engine import Database
    from ctafleet.kernel.clock import SystemClock
    from ctafleet.telematics.retention import prune

    settings = _settings()

    async def run() -> Any:
        db = Database(settings.database_url, settings)
        try:
            return await prune(
                db,
                now=SystemClock().now(),
                default_days=settings.telemetry.retention_days,
                chunk=chunk,
                dry_run=dry_run,
                progress=typer.echo,
            )
        finally:
            await db.dispose()

    try:
        report = asyncio.run(run())
    except OSError as exc:
        raise _fail(f"cannot reach the database: {exc}") from None
    verb = "would drop" if dry_run else "dropped"
    typer.echo(
        f"{verb} {len(report.partitions)} partitions; "
        f"{'would delete' if dry_run else 'deleted'} {report.deleted} positions "
        f"in {len(report.tenants)} tenants with a shorter retention"
    )


# --- config and docs ---------------------------------------------------------------------


@config_app.command("check")
def config_check(
    env_file: Annotated[
        Path | None,
        typer.Option(
            help="A .env file to validate (with the environment).", exists=True, dir_okay=False
        ),
    ] = None,
) -> None:
    """Validate the settings; list every problem at once."""
    settings = _settings(env_file)
    typer.echo(
        f"ok: environment={settings.environment.value}, database="
        f"{'PostgreSQL' if 'postgresql' in settings.database_url else 'SQLite'}, "
        f"redis={'on' if settings.redis.url else 'off'}"
    )


@config_app.command("docs")
def config_docs(
    root: Annotated[Path, typer.Option(help="Project root to write into.")] = Path("."),
) -> None:
    """Write docs/configuration.md, .env.example and the Kubernetes settings files (the
    ConfigMap's env file, the Secret's template) from the settings model."""
    from ctafleet.config_docs import write

    for path in write(root):
        typer.echo(f"wrote {path}")


@permissions_app.command("docs")
def permissions_docs(
    root: Annotated[Path, typer.Option(help="Project root to write into.")] = Path("."),
) -> None:
    """Write docs/permissions.md from the permission matrix."""
    from ctafleet.auth.permissions import render_markdown

    path = root / "docs" / "permissions.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_markdown())
    typer.echo(f"wrote {path}")


if __name__ == "__main__":  # pragma: no cover
    app()
