"""`ctafleet dr failover`: promote a streaming standby and repoint the application."""

from __future__ import annotations

import datetime as dt
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ctafleet.db.conninfo import ConnInfo, ConnInfoError, redact
from ctafleet.ops.dr.postgres import LocalServer, Pg, wait_writable
from ctafleet.ops.dr.proc import DrError

APP_URL_VAR = "CTAFLEET_DATABASE__URL"
ADMIN_URL_VAR = "CTAFLEET_DATABASE__ADMIN_URL"


@dataclass
class FailoverResult:
    standby: str
    was_standby: bool
    promote_seconds: float
    writable_seconds: float
    timeline: int | None
    received_lsn: str | None
    replayed_lsn: str | None
    env: dict[str, str]  # variable -> new value (passwords masked)
    notes: list[str] = field(default_factory=list)
    env_file: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def repoint(url: str, host: str, port: int | None) -> str:
    """The same URL (role, password, database, driver, options) on another server."""
    try:
        return ConnInfo.from_url(url).with_server(host, port).url()
    except ConnInfoError as exc:
        raise DrError(f"the application URL: {exc}") from None


def mask(url: str) -> str:
    try:
        return ConnInfo.from_url(url).url(hide_password=True)
    except ConnInfoError:
        return redact(url)


def update_env_file(path: Path, values: dict[str, str]) -> None:
    """Set each variable in a dotenv file, keeping its other lines; atomic, mode 0600 (the
    URLs may carry passwords)."""
    lines = path.read_text().splitlines() if path.exists() else []
    seen: set[str] = set()
    out = []
    for line in lines:
        key = line.split("=", 1)[0].strip().removeprefix("export ").strip()
        if key in values and "=" in line and not line.lstrip().startswith("#"):
            if key in seen:
                continue
            out.append(f"{key}={values[key]}")
            seen.add(key)
        else:
            out.append(line)
    out += [f"{k}={v}" for k, v in values.items() if k not in seen]
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write("\n".join(out) + "\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _old_primary_writable(info: ConnInfo) -> bool:
    try:
        return not Pg(info, connect_timeout=3, command_timeout=5).value(
            "SELECT pg_is_in_recovery()"
        )
    except Exception:
        return False  # unreachable: what a failover is for


def failover(
    standby: ConnInfo,
    *,
    app_url: str | None,
    admin_url: str | None,
    new_host: str | None = None,
    new_port: int | None = None,
    server: LocalServer | None = None,
    old_primary: ConnInfo | None = None,
    force: bool = False,
    relax_sync: bool = True,
    timeout: float = 120,
    write_env: Path | None = None,
) -> FailoverResult:
    """Promote (pg_ctl promote when `server` is given, else pg_promote()), wait until the
    new primary commits, and work out the application's new database URLs."""
    # The URLs are rewritten after the promotion: a bad one must stop us before it.
    for name, url in (("--app-url", app_url), ("--admin-url", admin_url)):
        if url:
            try:
                ConnInfo.from_url(url)
            except ConnInfoError as exc:
                raise DrError(f"{name}: {exc}") from None
    if old_primary is not None and _old_primary_writable(old_primary) and not force:
        raise DrError(
            f"the old primary {old_primary.describe()} still accepts writes: promoting now "
            "would leave two primaries (split brain). Stop or fence it first, or pass --force."
        )
    pg = Pg(standby)
    state = pg.rows(
        "SELECT pg_is_in_recovery() AS standby, pg_last_wal_receive_lsn()::text AS received, "
        "pg_last_wal_replay_lsn()::text AS replayed"
    )[0]
    notes: list[str] = []
    started = time.monotonic()
    if state["standby"]:
        if server is not None:
            server.promote(timeout=timeout)
        else:
            promoted = pg.value(
                "SELECT pg_promote(wait => true, wait_seconds => :t)", {"t": int(timeout)}
            )
            if not promoted:
                raise DrError(f"pg_promote() did not finish within {timeout:.0f} s")
    else:
        notes.append(f"{standby.describe()} was already a primary; nothing to promote")
    promoted_at = time.monotonic()
    ready = wait_writable(pg, timeout=timeout, server=server, relax_sync=relax_sync)
    notes += ready.notes
    host = new_host or standby.host
    port = new_port or standby.port
    if host is None:
        raise DrError("no host for the new primary: pass --new-host")
    env: dict[str, str] = {}
    if app_url:
        env[APP_URL_VAR] = repoint(app_url, host, port)
    if admin_url:
        env[ADMIN_URL_VAR] = repoint(admin_url, host, port)
    if not env:
        notes.append(
            f"no current {APP_URL_VAR}: point it at host {host}, port {port} "
            f"(database {standby.database})"
        )
    result = FailoverResult(
        standby=standby.describe(),
        was_standby=bool(state["standby"]),
        promote_seconds=round(promoted_at - started, 3),
        writable_seconds=round(time.monotonic() - started, 3),
        timeline=ready.probe.get("timeline"),
        received_lsn=state["received"],
        replayed_lsn=state["replayed"],
        env={k: mask(v) for k, v in env.items()},
        notes=notes,
    )
    if write_env is not None and env:
        update_env_file(write_env, env)
        result.env_file = str(write_env)
        notes.append(f"wrote {', '.join(env)} to {write_env}")
    notes.append(
        "restart the api and worker processes to pick up the new URL (settings are read at "
        f"start-up); promoted at {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M:%S}Z"
    )
    return result
