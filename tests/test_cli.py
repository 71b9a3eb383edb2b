"""The `ctafleet` command on a throwaway data directory (embedded SQLite)."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner, Result

from ctafleet import __version__
from ctafleet.cli import app as cli
from ctafleet.db.migrate import head_revision
from ctafleet.kernel.roles import Role

STRONG = "Violet-Harbour-Lantern-42"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("CTAFLEET_") and not name.startswith("CTAFLEET_TEST_"):
            monkeypatch.delenv(name)


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CTAFLEET_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("CTAFLEET_OBSERVABILITY__LOG_LEVEL", "WARNING")
    return tmp_path


def run(*args: str, input: str | None = None, **env: str) -> Result:
    return CliRunner().invoke(cli, list(args), input=input, env=env or None)


def db_rows(data_dir: Path, sql: str, *params: object) -> list[tuple[object, ...]]:
    with sqlite3.connect(data_dir / "ctafleet.db") as conn:
        return conn.execute(sql, params).fetchall()


def _commands(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield path
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, (*path, name))


def test_help_on_every_command() -> None:
    root = typer.main.get_command(cli)
    paths = list(_commands(root))
    assert {("db", "upgrade"), ("users", "create"), ("demo",)} <= set(paths)
    for path in paths:
        result = run(*path, "--help")
        assert result.exit_code == 0, (path, result.output)
        assert "Usage:" in result.output, path
        command = root
        for part in path:
            command = command.commands[part]  # type: ignore[attr-defined]  # a click Group
        if path:
            # Every command explains itself in its help.
            assert command.help or command.short_help, f"`ctafleet {' '.join(path)}` has no help"


def test_no_arguments_shows_help_and_version() -> None:
    result = run()
    assert "Usage:" in result.output
    result = run("--version")
    assert result.exit_code == 0
    assert result.output.strip() == __version__


def test_entry_point_runs() -> None:
    exe = Path(sys.executable).with_name("ctafleet")
    result = subprocess.run(
        [str(exe), "--version"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == __version__


def test_db_upgrade_current_check(data_dir: Path) -> None:
    head = head_revision()
    result = run("db", "current")
    assert result.exit_code == 0, result.output
    assert "current: (empty database)" in result.output
    assert f"head:    {head}" in result.output

    result = run("db", "check")
    assert result.exit_code != 0
    assert "ctafleet db upgrade" in result.output

    result = run("db", "upgrade")
    assert result.exit_code == 0, result.output
    assert f"database at revision {head}" in result.output
    assert (data_dir / "ctafleet.db").exists()

    result = run("db", "current")
    assert f"current: {head}" in result.output
    result = run("db", "check")
    assert result.exit_code == 0, result.output
    assert f"ok: revision {head}, no drift" in result.output

    result = run("db", "upgrade")  # idempotent
    assert result.exit_code == 0, result.output


def test_db_check_reports_drift(data_dir: Path) -> None:
    assert run("db", "upgrade").exit_code == 0
    with sqlite3.connect(data_dir / "ctafleet.db") as conn:
        conn.execute("ALTER TABLE vehicles ADD COLUMN stray TEXT")
    result = run("db", "check")
    assert result.exit_code != 0
    assert "drift" in result.output
    assert "stray" in result.output


def test_db_upgrade_failure_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CTAFLEET_DATABASE__URL", "postgresql+asyncpg://nobody@127.0.0.1:1/none")
    result = run("db", "upgrade")
    assert result.exit_code == 1
    assert "migration failed" in result.output
    assert "Traceback" not in result.output


def test_tenants_create(data_dir: Path) -> None:
    assert run("db", "upgrade").exit_code == 0
    result = run(
        "tenants", "create", "public-works", "--name", "Public Works", "--units", "imperial"
    )
    assert result.exit_code == 0, result.output
    assert "created tenant public-works" in result.output
    rows = db_rows(data_dir, "SELECT slug, name, display_units FROM tenants")
    assert rows == [("public-works", "Public Works", "imperial")]

    again = run("tenants", "create", "public-works")
    assert again.exit_code != 0
    assert "Traceback" not in again.output
    bad = run("tenants", "create", "Not A Slug!")
    assert bad.exit_code != 0
    assert "Traceback" not in bad.output
    assert len(db_rows(data_dir, "SELECT id FROM tenants")) == 1


def test_users_create(data_dir: Path) -> None:
    assert run("db", "upgrade").exit_code == 0
    assert run("tenants", "create", "acme").exit_code == 0

    result = run(
        "users", "create", "--tenant", "acme", "--email", "Ada@Example.org", "--role", "admin",
        input=f"{STRONG}\n",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "created user ada@example.org (admin) in acme" in result.output
    assert STRONG not in result.output

    result = run(
        "users", "create", "--tenant", "acme", "--email", "bo@example.org", "--role", "viewer",
        CTAFLEET_PASSWORD=STRONG,
    )  # fmt: skip
    assert result.exit_code == 0, result.output

    rows = db_rows(data_dir, "SELECT email, role, password_hash FROM users ORDER BY email")
    assert [(r[0], r[1]) for r in rows] == [
        ("ada@example.org", "admin"),
        ("bo@example.org", "viewer"),
    ]
    assert all(str(r[2]).startswith("$argon2id$") for r in rows)


@pytest.mark.parametrize(
    ("password", "hint"),
    [("short", "at least 12"), ("password1234", "common"), ("aaaaaaaaaaaaaaaa", "weak")],
)
def test_users_create_refuses_weak_passwords(data_dir: Path, password: str, hint: str) -> None:
    assert run("db", "upgrade").exit_code == 0
    assert run("tenants", "create", "acme").exit_code == 0
    result = run(
        "users", "create", "--tenant", "acme", "--email", "weak@example.org", "--role", "viewer",
        input=f"{password}\n",
    )  # fmt: skip
    assert result.exit_code != 0
    assert "error:" in result.output, result.output
    assert hint in result.output, result.output
    assert "Traceback" not in result.output
    assert db_rows(data_dir, "SELECT id FROM users") == []


def test_users_create_takes_long_passphrases(data_dir: Path) -> None:
    assert run("db", "upgrade").exit_code == 0
    assert run("tenants", "create", "acme").exit_code == 0
    passphrase = "a long passphrase from a password manager, " * 5  # 220 characters
    result = run(
        "users", "create", "--tenant", "acme", "--email", "pm@example.org", "--role", "viewer",
        input=f"{passphrase}\n",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    result = run(
        "users", "create", "--tenant", "acme", "--email", "pm2@example.org", "--role", "viewer",
        input=f"{passphrase * 2}\n",
    )  # fmt: skip
    assert result.exit_code in (1, 2), result.output
    assert "at most 256" in result.output, result.output
    assert "Traceback" not in result.output


def test_users_create_errors(data_dir: Path) -> None:
    assert run("db", "upgrade").exit_code == 0
    base = ["users", "create", "--email", "x@example.org", "--role", "viewer"]
    result = run(*base, "--tenant", "nope", input=f"{STRONG}\n")
    assert result.exit_code != 0
    assert "no tenant 'nope'" in result.output
    assert run("tenants", "create", "acme").exit_code == 0
    result = run(*base, "--tenant", "acme", input="\n")
    assert result.exit_code != 0
    assert "no password" in result.output
    result = run(
        "users", "create", "--tenant", "acme", "--email", "x@example.org", "--role", "pilot",
        input=f"{STRONG}\n",
    )  # fmt: skip
    assert result.exit_code != 0
    assert "role" in result.output
    assert db_rows(data_dir, "SELECT id FROM users") == []


def _demo_credentials(output: str) -> dict[str, tuple[str, str]]:
    creds = {}
    roles = {r.value for r in Role}
    for line in output.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] in roles:
            creds[parts[0]] = (parts[1], parts[2])
    return creds


def test_demo_seeds_once(data_dir: Path) -> None:
    first = run("demo", "--no-serve", "--vehicles", "3")
    assert first.exit_code == 0, first.output
    creds = _demo_credentials(first.output)
    assert set(creds) == {r.value for r in Role}, first.output
    assert "CTAFLEET_AUTH__SECRET_KEY" not in os.environ  # no side effect on the process
    assert db_rows(data_dir, "SELECT slug FROM tenants") == [("demo",)]
    assert db_rows(data_dir, "SELECT count(*) FROM vehicles") == [(3,)]
    assert db_rows(data_dir, "SELECT count(*) FROM users") == [(len(Role),)]
    saved = json.loads((data_dir / "demo-credentials.json").read_text())
    assert {u["role"]: (u["email"], u["password"]) for u in saved["users"]} == creds
    assert (data_dir / "demo-credentials.json").stat().st_mode & 0o077 == 0

    second = run("demo", "--no-serve", "--vehicles", "3")
    assert second.exit_code == 0, second.output
    assert _demo_credentials(second.output) == creds
    assert db_rows(data_dir, "SELECT count(*) FROM tenants") == [(1,)]
    assert db_rows(data_dir, "SELECT count(*) FROM vehicles") == [(3,)]
    assert db_rows(data_dir, "SELECT count(*) FROM users") == [(len(Role),)]


async def test_demo_credentials_log_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The printed credentials work against an app on the same data directory."""
    import httpx

    from ctafleet.app import create_app
    from ctafleet.config import load_settings

    monkeypatch.setenv("CTAFLEET_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("CTAFLEET_OBSERVABILITY__LOG_LEVEL", "WARNING")
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("ctafleet")),
        *("demo", "--no-serve", "--vehicles", "1"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, stderr.decode()
    email, password = _demo_credentials(stdout.decode())["fleet_manager"]
    # `serve` on the same data directory: the same key, found there (no key is configured).
    app = create_app(load_settings())
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            r = await client.post("/api/v1/auth/login", json={"email": email, "password": password})
            assert r.status_code == 200, r.text
            token = r.json()["access_token"]
            r = await client.get("/api/v1/vehicles", headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 200
            assert len(r.json()["data"]) == 1
    finally:
        await app.state.ctafleet.db.dispose()


@pytest.mark.slow
def test_demo_seeds_a_large_fleet_in_bulk(data_dir: Path) -> None:
    """5,000 vehicles with drivers, assignments and devices (in seconds; bench-free: the time
    is printed, not asserted)."""
    import time

    started = time.perf_counter()
    result = run("demo", "--no-serve", "--vehicles", "5000")
    elapsed = time.perf_counter() - started
    assert result.exit_code == 0, result.output
    counts = {
        table: db_rows(data_dir, f"SELECT count(*) FROM {table}")[0][0]  # noqa: S608
        for table in ("vehicles", "drivers", "assignments", "devices", "meter_readings")
    }
    assert counts == dict.fromkeys(counts, 5000), counts
    created = db_rows(
        data_dir, "SELECT entity_type, count(*) FROM audit_events GROUP BY entity_type"
    )
    expected = {"vehicle": 5000, "driver": 5000, "assignment": 5000, "device": 5000}
    assert dict(created) == {**expected, "tenant": 1, "user": 7}  # type: ignore[arg-type]
    print(f"demo --vehicles 5000: {elapsed:.1f} s")


def test_demo_refuses_a_port_in_use_before_setting_anything_up(data_dir: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run("demo", "--port", str(port))
    assert result.exit_code == 1, result.output
    assert f"127.0.0.1:{port}" in result.output
    assert "already in use" in result.output
    assert f"make demo PORT={port + 1}" in result.output
    assert "http://" not in result.output  # no URL that would not answer
    assert not (data_dir / "ctafleet.db").exists()  # nothing was set up


def test_demo_without_serving_prints_no_url_and_names_the_credentials_file(
    data_dir: Path,
) -> None:
    result = run("demo", "--no-serve", "--vehicles", "1")
    assert result.exit_code == 0, result.output
    assert "http://" not in result.output
    assert str((data_dir / "demo-credentials.json").resolve()) in result.output
    assert "15 minutes" in result.output


def test_help_keeps_option_names_whole_at_80_columns() -> None:
    result = CliRunner().invoke(cli, ["serve", "--help"], env={"COLUMNS": "80"}, terminal_width=80)
    assert result.exit_code == 0
    assert "--forwarded-allow-ips" in result.output
    assert "--proxy-headers / --no-proxy-headers" in result.output
    assert "…" not in result.output
    assert "web UI" not in result.output  # there is none yet


def test_readme_says_what_a_new_user_needs() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "make demo PORT=" in readme
    assert "demo-credentials.json" in readme
    assert "15 minutes" in readme
    assert "auth/refresh" in readme


@pytest.mark.postgres
def test_demo_on_postgresql(fresh_pg: Any, tmp_path: Path) -> None:
    """The documented path: the demo migrates as the owner, grants the application role,
    seeds through it (row-level security applies), and its logins work."""
    import httpx

    from ctafleet.app import create_app
    from ctafleet.config import load_settings

    pg = fresh_pg()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CTAFLEET_")}
    env.update(
        CTAFLEET_DATA_DIR=str(tmp_path),
        CTAFLEET_OBSERVABILITY__LOG_LEVEL="WARNING",
        CTAFLEET_DATABASE__URL=pg.app_url,
        CTAFLEET_DATABASE__ADMIN_URL=pg.owner_url,
        CTAFLEET_DATABASE__APP_ROLE=pg.app_role,
    )
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("ctafleet")), "demo", "--no-serve", "--vehicles", "20"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    email, password = _demo_credentials(proc.stdout)["viewer"]
    settings = load_settings(
        data_dir=tmp_path,
        database={"url": pg.app_url, "admin_url": pg.owner_url, "app_role": pg.app_role},
    )

    async def check() -> None:
        app = create_app(settings)
        try:
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://testserver"
            ) as client:
                login = {"email": email, "password": password}
                r = await client.post("/api/v1/auth/login", json=login)
                assert r.status_code == 200, r.text
                headers = {"Authorization": f"Bearer {r.json()['access_token']}"}
                r = await client.get("/api/v1/vehicles", params={"count": "true"}, headers=headers)
                assert r.json()["pagination"]["total"] == 20
        finally:
            await app.state.ctafleet.db.dispose()

    asyncio.run(check())


def test_the_served_demo_fleet_moves(data_dir: Path) -> None:
    """`ctafleet demo` serves and drives its fleet through the OsmAnd endpoint: within seconds
    every vehicle has a position, and positions change; SIGINT stops both cleanly."""
    import signal
    import time

    import httpx

    from tests.kit.net import free_port, wait_listening

    port = free_port()
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("ctafleet")), "demo", "--vehicles=3", f"--port={port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_listening(port, proc, timeout=120)
        creds = json.loads((data_dir / "demo-credentials.json").read_text())
        manager = next(u for u in creds["users"] if u["role"] == "fleet_manager")
        base = f"http://127.0.0.1:{port}"
        r = httpx.post(
            f"{base}/api/v1/auth/login",
            json={"email": manager["email"], "password": manager["password"]},
        )
        assert r.status_code == 200, r.text
        headers = {"Authorization": f"Bearer {r.json()['access_token']}"}

        def snapshot() -> dict[str, tuple[float, float]]:
            r = httpx.get(f"{base}/api/v1/telemetry/snapshot", headers=headers)
            assert r.status_code == 200, r.text
            return {p["vehicle_id"]: (p["lat"], p["lon"]) for p in r.json()["data"] if p["lat"]}

        deadline = time.monotonic() + 60
        first: dict[str, tuple[float, float]] = {}
        while len(first) < 3 and time.monotonic() < deadline:
            time.sleep(0.5)
            first = snapshot()
        assert len(first) == 3, first
        moved: set[str] = set()
        while not moved and time.monotonic() < deadline:
            time.sleep(1)
            moved = {v for v, at in snapshot().items() if at != first[v]}
        assert moved, "no vehicle moved"
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out.decode()
    assert "the demo fleet is driving" in out.decode()
    assert "Traceback" not in out.decode()
