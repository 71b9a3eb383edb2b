"""Fixtures of the logical-backup tests: Azurite on loopback, age keys, seeded databases.

Azurite and the Pushgateway come from scripts/install-backup-tools.sh; without them the tests
that need them skip, and CTAFLEET_REQUIRE_SERVICES=1 turns the skip into a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from pyrage import x25519
from sqlalchemy.engine import make_url
from typer.testing import CliRunner, Result

from ctafleet.db.migrate import upgrade
from ctafleet.ops.backup.cli import backup_app
from tests.conftest import PgServer, asyncpg_url, service_unavailable
from tests.kit.net import free_port

ROOT = Path(__file__).resolve().parents[3]
AZURITE_BIN = ROOT / ".tools" / "azurite" / "node_modules" / ".bin" / "azurite-blob"
# Azurite's fixed development account key (public; it only opens the emulator).
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
PROBE_ROWS = 2500  # ~3 MB of dump: more than the 1 MB tmpfs of the full-disk tests


def wait_listening(port: int, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server on port {port} exited with {process.returncode}")
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        time.sleep(0.05)
    raise AssertionError(f"nothing listening on 127.0.0.1:{port} after {timeout} s")


def stop(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


# --- Azurite ----------------------------------------------------------------------------


@dataclass
class Azurite:
    port: int

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/devstoreaccount1"

    def connection_string(self, key: str = AZURITE_KEY) -> str:
        return (
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
            f"AccountKey={key};BlobEndpoint={self.endpoint};"
        )

    def service(self) -> Any:
        from azure.storage.blob import BlobServiceClient

        return BlobServiceClient.from_connection_string(self.connection_string())

    def new_container(self) -> str:
        name = f"backups-{uuid.uuid4().hex[:12]}"
        self.service().create_container(name)
        return name


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    if not AZURITE_BIN.exists():
        service_unavailable(
            f"Azurite is not installed at {AZURITE_BIN} (scripts/install-backup-tools.sh)"
        )
    location = tmp_path_factory.mktemp("azurite")
    port = free_port()
    log = (location / "azurite.log").open("wb")
    process = subprocess.Popen(
        [str(AZURITE_BIN), "--blobHost", "127.0.0.1", "--blobPort", str(port),
         "--location", str(location / "data"), "--disableTelemetry", "--skipApiVersionCheck",
         "--loose", "--silent"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        wait_listening(port, process)
        yield Azurite(port)
    finally:
        stop(process)
        log.close()


# --- keys and the command ---------------------------------------------------------------


@dataclass
class AgeKey:
    identity_file: Path
    recipient: str


def make_key(directory: Path, name: str = "backup-key.txt") -> AgeKey:
    identity = x25519.Identity.generate()
    path = directory / name
    path.write_text(f"# test key\n{identity}\n")
    path.chmod(0o600)
    return AgeKey(path, str(identity.to_public()))


@pytest.fixture(scope="session")
def age_key(tmp_path_factory: pytest.TempPathFactory) -> AgeKey:
    return make_key(tmp_path_factory.mktemp("keys"))


@dataclass
class BackupCli:
    """`ctafleet backup` with one installation's settings as environment variables."""

    env: dict[str, str] = field(default_factory=dict)

    def __call__(self, *args: str, **extra_env: str) -> Result:
        env = {**self.env, **extra_env}
        return CliRunner().invoke(backup_app, list(args), env=env, catch_exceptions=False)

    def create(self, **extra_env: str) -> str:
        result = self("create", **extra_env)
        assert result.exit_code == 0, result.output
        return result.stdout.strip().splitlines()[-1]


def local_cli(tmp_path: Path, key: AgeKey, database_url: str) -> BackupCli:
    return BackupCli(
        {
            "CTAFLEET_DATA_DIR": str(tmp_path / "data"),
            "CTAFLEET_DATABASE__URL": database_url,
            "CTAFLEET_STORAGE__BACKEND": "local",
            "CTAFLEET_STORAGE__LOCAL_PATH": str(tmp_path / "objects"),
            "CTAFLEET_BACKUP__AGE_RECIPIENT": key.recipient,
            "CTAFLEET_BACKUP__IDENTITY_FILE": str(key.identity_file),
        }
    )


def azure_cli(tmp_path: Path, key: AgeKey, database_url: str, azurite: Azurite) -> BackupCli:
    cli = local_cli(tmp_path, key, database_url)
    cli.env.update(
        {
            "CTAFLEET_STORAGE__BACKEND": "azure",
            "CTAFLEET_STORAGE__AZURE_CONNECTION_STRING": azurite.connection_string(),
            "CTAFLEET_STORAGE__AZURE_CONTAINER": azurite.new_container(),
        }
    )
    return cli


# --- PostgreSQL ---------------------------------------------------------------------------


def run_async(coro: Any) -> Any:
    return asyncio.run(coro)


async def pg_fetch(url: str, query: str, *args: Any) -> list[Any]:
    u = make_url(url)
    conn = await asyncpg.connect(
        host=u.host,
        port=u.port,
        user=u.username,
        password=u.password,
        database=u.database,
        server_settings={"TimeZone": "UTC", "extra_float_digits": "1"},
    )
    try:
        return list(await conn.fetch(query, *args))
    finally:
        await conn.close()


PG_SEED = f"""
INSERT INTO tenants (id, slug, name, display_units, timezone, currency, mfa_required_roles,
                     created_at, updated_at, version)
SELECT ('00000000-0000-4000-8000-' || lpad(g::text, 12, '0'))::uuid, 'tenant-' || g,
       'Tenant ' || g || ' — Müller & Søn', 'metric', 'Europe/Berlin', 'EUR', '["admin"]',
       timestamptz '2026-01-01 00:00:00+00' + g * interval '1 hour',
       timestamptz '2026-01-02 00:00:00+00', 1
FROM generate_series(1, 3) g;

INSERT INTO vehicles (id, tenant_id, unit_number, vin, vin_nonstandard, plate,
                      plate_jurisdiction, make, model, year, vehicle_type, department, status,
                      odometer_m, engine_hours_s, fuel_type, tank_capacity_l, purchase_date,
                      purchase_cost_minor, purchase_currency, home_name, home_lat, home_lon,
                      notes, created_at, updated_at, version)
SELECT md5('vehicle' || g)::uuid,
       ('00000000-0000-4000-8000-' || lpad((g % 3 + 1)::text, 12, '0'))::uuid,
       'U-' || g, upper(substr(md5('vin' || g), 1, 17)), g % 5 = 0, 'P' || g, 'US-IL',
       'Ford', 'Transit', 2000 + g % 25, 'van', 'Public works', 'active',
       g * 1234567, g * 3600, 'diesel', CASE WHEN g % 4 = 0 THEN NULL ELSE 80.5 + g / 7.0 END,
       date '2020-01-01' + g, g * 100, 'EUR', 'Depot ' || g, 41.8 + g / 1e6, -87.6 - g / 1e6,
       E'line one\\nline "two"\\ttab', timestamptz '2026-01-01 00:00:00+00',
       timestamptz '2026-02-01 12:34:56.789+00', 1
FROM generate_series(1, 300) g;

CREATE TABLE backup_probe (
    id bigserial PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES tenants (id),
    label text NOT NULL,
    payload jsonb,
    blob bytea,
    measured double precision,
    at timestamptz NOT NULL,
    span interval,
    note text
);
INSERT INTO backup_probe (tenant_id, label, payload, blob, measured, at, span, note)
SELECT ('00000000-0000-4000-8000-' || lpad((g % 3 + 1)::text, 12, '0'))::uuid,
       'probe ' || g,
       jsonb_build_object('g', g, 'even', g % 2 = 0, 'tags', jsonb_build_array('a', g)),
       decode(md5(g::text), 'hex'), g / 3.0,
       timestamptz '2026-03-01 00:00:00+00' + g * interval '1 minute',
       g * interval '1 second', repeat(md5(g::text), 40)
FROM generate_series(1, {PROBE_ROWS}) g;
"""  # noqa: S608 - a constant row count


@dataclass
class PgSource:
    name: str
    owner_url: str  # superuser on the seeded database
    app_url: str  # the application's role: no superuser, no BYPASSRLS
    server: PgServer

    def db_url(self, name: str) -> str:
        return asyncpg_url(self.server.admin_url, database=name)


@pytest.fixture
def pg_source(fresh_pg: Callable[[], Any], pg_server: PgServer) -> PgSource:
    """A fresh database at the schema's head revision, seeded with every kind of value."""
    db = fresh_pg()
    run_async(upgrade(db.owner_url, app_role=db.app_role))
    run_async(pg_server.execute(PG_SEED, database=db.name))
    return PgSource(name=db.name, owner_url=db.owner_url, app_url=db.app_url, server=pg_server)


@pytest.fixture
def pg_names(pg_server: PgServer) -> Iterator[Callable[[], str]]:
    """Names for restore targets; every database made from them is dropped afterwards."""
    names: list[str] = []

    def make() -> str:
        names.append(f"ctafleet_restore_target_{uuid.uuid4().hex[:8]}")
        return names[-1]

    yield make
    for name in names:
        run_async(
            pg_server.execute(
                *[
                    f"DROP DATABASE IF EXISTS {row} WITH (FORCE)"
                    for row in [name, *leftover_databases(pg_server, name)]
                ]
            )
        )


def leftover_databases(server: PgServer, prefix: str) -> list[str]:
    """Databases named `<prefix>_...`: the temporary ones a restore into `prefix` makes."""
    rows = run_async(
        pg_fetch(
            asyncpg_url(server.admin_url),
            "SELECT datname FROM pg_database WHERE datname LIKE $1 || '\\_%'",
            prefix,
        )
    )
    return [r["datname"] for r in rows]


def database_exists(server: PgServer, name: str) -> bool:
    rows = run_async(
        pg_fetch(
            asyncpg_url(server.admin_url),
            "SELECT 1 FROM pg_database WHERE datname = $1",
            name,
        )
    )
    return bool(rows)


def pg_contents(url: str) -> dict[str, str]:
    """Per user table: an MD5 over its rows' text sorted, computed here, not by the product."""
    tables = run_async(
        pg_fetch(
            url,
            "SELECT schemaname || '.' || tablename AS name FROM pg_tables "
            "WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1",
        )
    )
    out = {}
    for row in tables:
        name = row["name"]
        schema, table = name.split(".", 1)
        # Names read from pg_tables, quoted.
        query = (
            "SELECT count(*) AS n, "  # noqa: S608
            "md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), '')) AS h "
            f'FROM "{schema}"."{table}" t'
        )
        got = run_async(pg_fetch(url, query))
        out[name] = f"{got[0]['n']}:{got[0]['h']}"
    return out


# --- SQLite -------------------------------------------------------------------------------


@pytest.fixture
def sqlite_source(tmp_path: Path) -> Path:
    """A SQLite database at head, seeded like the PostgreSQL one."""
    path = tmp_path / "source" / "ctafleet.db"
    run_async(upgrade(f"sqlite+aiosqlite:///{path}"))
    conn = sqlite3.connect(path)
    with conn:
        conn.execute(
            "INSERT INTO tenants (id, slug, name, display_units, timezone, currency, "
            "mfa_required_roles, created_at, updated_at, version) VALUES "
            "(?, 'acme', 'Acme — Müller', 'metric', 'UTC', 'EUR', '[]', "
            "'2026-01-01 00:00:00', '2026-01-01 00:00:00', 1)",
            (uuid.UUID(int=1).hex,),
        )
        conn.execute(
            "CREATE TABLE backup_probe (id INTEGER PRIMARY KEY, label TEXT NOT NULL, "
            "blob BLOB, measured REAL, note TEXT)"
        )
        conn.executemany(
            "INSERT INTO backup_probe (label, blob, measured, note) VALUES (?, ?, ?, ?)",
            [
                (f"probe {g}", uuid.UUID(int=g).bytes, g / 3, f"{uuid.UUID(int=g).hex}" * 40)
                for g in range(PROBE_ROWS)
            ],
        )
    conn.close()
    return path


def sqlite_contents(path: Path) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


# --- a tiny filesystem --------------------------------------------------------------------


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MB tmpfs: a scratch or target location that fills up."""
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        service_unavailable("mounting a tmpfs needs root and mount(8)")
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        service_unavailable(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        yield mount_point
    finally:
        # Lazy: a file still open somewhere must not leave the mount behind.
        subprocess.run(["umount", "--lazy", str(mount_point)], check=False)


def python_module_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "ctafleet.ops.backup.cli", *args]
