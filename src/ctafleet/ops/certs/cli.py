"""`ctafleet ops certs check`: when the certificates the named hosts serve expire.

Exit codes: 0 every host checked, 1 at least one could not be (the others are still printed
and published), 2 a usage error (a target that does not parse, a metrics file not `*.prom`).
"""

from __future__ import annotations

import datetime as dt
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from ctafleet.clihelp import HELP
from ctafleet.ops.certs.check import (
    Certificate,
    CheckError,
    Target,
    TargetError,
    fetch,
    parse_target,
)

# The `ops` group: operations checks. Its sub-groups live with their code (ctafleet.ops.*).
ops_app = typer.Typer(
    **HELP,
    help="Operations checks: TLS certificates.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
certs_app = typer.Typer(
    **HELP, help="TLS certificates: when the served ones expire.", no_args_is_help=True
)
ops_app.add_typer(certs_app, name="certs")

PARALLEL = 8


def _exit(message: str, code: int) -> NoReturn:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _check(target: Target, timeout: float) -> Certificate | CheckError:
    try:
        return fetch(target, timeout)
    except CheckError as exc:
        return exc


def _table(rows: list[tuple[str, str, str, str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for host, expires, days, issuer in rows:
        typer.echo(
            f"{host:<{widths[0]}}  {expires:<{widths[1]}}  {days:>{widths[2]}}  {issuer}".rstrip()
        )


@certs_app.command("check")
def check(
    targets: Annotated[
        list[str],
        typer.Argument(
            metavar="HOST[:PORT][=ADDRESS[:PORT]]",
            help="A name clients use (the certificate must carry it; it is sent as SNI), "
            "optionally with the address to reach it at. Port 443 unless given.",
            show_default=False,
        ),
    ],
    connect: Annotated[
        str | None,
        typer.Option(
            metavar="ADDRESS[:PORT]",
            help="Connect here for every host given without its own =ADDRESS (a load "
            "balancer, an edge, split DNS).",
        ),
    ] = None,
    metrics_file: Annotated[
        Path | None,
        typer.Option(
            "--metrics-file",
            help="Prometheus text file to replace (node-exporter textfile collector, "
            "`*.prom`) with ctafleet_tls_certificate_expiry_timestamp_seconds{host} and "
            "ctafleet_tls_certificate_check_success{host}. A host that fails keeps its last "
            "expiry. Default: none (print only).",
            dir_okay=False,
        ),
    ] = None,
    timeout: Annotated[
        float, typer.Option(min=0.1, max=300, help="Seconds for each connection and handshake.")
    ] = 10.0,
) -> None:
    """Read the certificate each host serves (a TLS handshake; no request is sent) and print
    when it expires, for the CTAFleetTLSCertificateExpiring alert (docs/tls.md)."""
    try:
        parsed = [parse_target(t, connect) for t in targets]
        if connect is not None:
            parse_target("localhost", connect)  # a bad --connect fails even when unused
    except TargetError as exc:
        _exit(str(exc), 2)
    labels = [t.label for t in parsed]
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        _exit(f"{', '.join(duplicates)} named more than once", 2)
    if metrics_file is not None and metrics_file.suffix != ".prom":
        _exit(f"--metrics-file {metrics_file}: the textfile collector reads only *.prom", 2)

    with ThreadPoolExecutor(min(PARALLEL, len(parsed))) as pool:
        results = list(pool.map(lambda t: _check(t, timeout), parsed))
    now = dt.datetime.now(dt.UTC)
    rows = [("HOST", "EXPIRES (UTC)", "DAYS LEFT", "ISSUER")]
    read: dict[str, float] = {}
    failed = 0
    for target, result in zip(parsed, results, strict=True):
        if isinstance(result, CheckError):
            failed += 1
            rows.append((target.label, "-", "-", "check failed"))
            typer.secho(f"error: {target.label}: {result}", fg=typer.colors.RED, err=True)
            continue
        read[target.label] = result.not_after.timestamp()
        days = result.days_left(now)
        rows.append(
            (target.label, f"{result.not_after:%Y-%m-%d %H:%M:%S}", f"{days:.1f}", result.issuer)
        )
    _table(rows)
    if metrics_file is not None:
        from ctafleet.ops.certs import metrics

        try:
            metrics.write(metrics_file, labels, read)
        except OSError as exc:
            _exit(f"cannot write {metrics_file}: {exc.strerror or exc}", 1)
    if failed:
        raise typer.Exit(1)
