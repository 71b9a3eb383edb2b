"""Logical backup and restore throughput, each as a ratio to plain pg_dump/pg_restore.

Generates a PostgreSQL database of the requested size (the CTAFleet schema plus a
positions table shaped like the telematics data that dominates a real installation), then
times, in the same run and on the same data:

    plain backup:   pg_dump -Fc -f file                       (the limit)
    ours:           ctafleet backup create                    (pg_dump, zstd, age, storage,
                                                               manifest with per-table checksums)
    plain restore:  createdb + pg_restore -d db file          (the limit)
    ours:           ctafleet backup restore --latest          (download, SHA-256, decrypt,
                                                               pg_restore into a temporary
                                                               database, compare every table
                                                               with the manifest, swap in)

Throughput is the database size divided by the wall time; the ratio is ours / plain (1.0:
as fast as plain). Goal: ratio >= 0.7 for both. The restore time is also the restore part of
the RTO (goal for 1 GB: under 2 minutes).

    .venv/bin/python bench/backup.py                  # ~1 GB
    .venv/bin/python bench/backup.py --size-mb 100    # a quick run
    .venv/bin/python bench/backup.py --storage azurite

The database server comes from --database-url, else CTAFLEET_BENCH_DATABASE_URL, else
CTAFLEET_TEST_DATABASE_URL, else postgresql://postgres@127.0.0.1:5432/postgres (a superuser:
it creates and drops its databases).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
from pyrage import x25519
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from ctafleet.db.migrate import upgrade  # noqa: E402

GOAL_RATIO = 0.7
RTO_GOAL_S_PER_GB = 120.0
AZURITE = ROOT / ".tools" / "azurite" / "node_modules" / ".bin" / "azurite-blob"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
ROWS_PER_BATCH = 250_000

POSITIONS = """
CREATE TABLE bench_positions (
    id bigserial PRIMARY KEY,
    tenant_id uuid NOT NULL,
    device_id uuid NOT NULL,
    fix_time timestamptz NOT NULL,
    lat double precision NOT NULL,
    lon double precision NOT NULL,
    speed_mps real,
    course real,
    altitude_m real,
    accuracy_m real,
    attributes jsonb NOT NULL
);
CREATE INDEX ix_bench_positions_device_time ON bench_positions (device_id, fix_time);
"""
FILL = """
INSERT INTO bench_positions (tenant_id, device_id, fix_time, lat, lon, speed_mps, course,
                             altitude_m, accuracy_m, attributes)
SELECT '5f1d7e4a-0000-4000-8000-000000000001'::uuid, md5((g % 300)::text)::uuid,
       timestamptz '2026-01-01' + g * interval '1 second',
       41.8 + random() / 10, -87.6 + random() / 10, (random() * 30)::real,
       (random() * 360)::real, (180 + random() * 20)::real, (3 + random() * 5)::real,
       jsonb_build_object('ignition', g % 7 > 0, 'battery_v', round((12 + random())::numeric, 2),
                          'sat', g % 12)
FROM generate_series($1::bigint, $2::bigint) g
"""


def server_url(arg: str | None) -> str:
    return (
        arg
        or os.environ.get("CTAFLEET_BENCH_DATABASE_URL")
        or os.environ.get("CTAFLEET_TEST_DATABASE_URL")
        or "postgresql://postgres@127.0.0.1:5432/postgres"
    )


def with_database(url: str, name: str, driver: str = "postgresql") -> str:
    u = make_url(url).set(drivername=driver, database=name)
    return u.render_as_string(hide_password=False)


def libpq_env(url: str) -> dict[str, str]:
    u = make_url(url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    for key, value in (
        ("PGHOST", u.host),
        ("PGPORT", str(u.port) if u.port else None),
        ("PGUSER", u.username),
        ("PGPASSWORD", u.password),
    ):
        if value:
            env[key] = value
    return env


async def admin(url: str, *statements: str) -> None:
    u = make_url(url)
    conn = await asyncpg.connect(
        host=u.host, port=u.port, user=u.username, password=u.password, database=u.database
    )
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


async def generate(url: str, size_mb: int) -> int:
    """Fill the database to about `size_mb`; its size in bytes."""
    u = make_url(url)
    conn = await asyncpg.connect(
        host=u.host, port=u.port, user=u.username, password=u.password, database=u.database
    )
    try:
        await conn.execute(POSITIONS)
        target = size_mb * 1024 * 1024
        start = 1
        size = int(await conn.fetchval("SELECT pg_database_size(current_database())"))
        while size < target:
            await conn.execute(FILL, start, start + ROWS_PER_BATCH - 1)
            start += ROWS_PER_BATCH
            size = int(await conn.fetchval("SELECT pg_database_size(current_database())"))
            print(f"  generated {start - 1:>10} positions, {size / 2**20:8.0f} MB", flush=True)
        # Hint bits and the visibility map set now, so neither timed run pays for them.
        await conn.execute("VACUUM (ANALYZE)")
        return int(await conn.fetchval("SELECT pg_database_size(current_database())"))
    finally:
        await conn.close()


def timed(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command[:4])} failed:\n{result.stderr[-3000:]}")
    return elapsed


@contextlib.contextmanager
def azurite(workdir: Path) -> Iterator[str]:
    if not AZURITE.exists():
        raise SystemExit(f"Azurite is not installed at {AZURITE}: scripts/install-backup-tools.sh")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen(
        [str(AZURITE), "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location",
         str(workdir / "azurite"), "--disableTelemetry", "--skipApiVersionCheck", "--loose",
         "--silent"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        for _ in range(300):
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            time.sleep(0.1)
        conn = (
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
            f"AccountKey={AZURITE_KEY};BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;"
        )
        from azure.storage.blob import BlobServiceClient

        BlobServiceClient.from_connection_string(conn).create_container("bench")
        yield conn
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--size-mb",
        type=int,
        default=int(os.environ.get("CTAFLEET_BENCH_SIZE_MB", "1024")),
        help="database size to generate (default 1024, or CTAFLEET_BENCH_SIZE_MB)",
    )
    parser.add_argument("--database-url", help="PostgreSQL server (a superuser)")
    parser.add_argument("--storage", choices=["local", "azurite"], default="local")
    parser.add_argument(
        "--restore-jobs", type=int, default=1, help="`restore --jobs` for our restore (default 1)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the generated databases")
    args = parser.parse_args()

    url = server_url(args.database_url)
    suffix = uuid.uuid4().hex[:8]
    source, plain_target, our_target = (
        f"ctafleet_bench_{suffix}",
        f"ctafleet_bench_{suffix}_plain",
        f"ctafleet_bench_{suffix}_ours",
    )
    workdir = Path(tempfile.mkdtemp(prefix="ctafleet-bench-backup-"))
    env = libpq_env(url)
    try:
        asyncio.run(admin(url, f"CREATE DATABASE {source}"))
        source_url = with_database(url, source)
        print(f"generating ~{args.size_mb} MB in {source} ...", flush=True)
        asyncio.run(upgrade(with_database(url, source, "postgresql+asyncpg")))
        size = asyncio.run(generate(source_url, args.size_mb))
        mb = size / 2**20

        identity = x25519.Identity.generate()
        (workdir / "key.txt").write_text(f"{identity}\n")
        ours_env = {
            **os.environ,
            "CTAFLEET_DATABASE__URL": source_url,
            "CTAFLEET_STORAGE__BACKEND": "local",
            "CTAFLEET_STORAGE__LOCAL_PATH": str(workdir / "objects"),
            "CTAFLEET_BACKUP__AGE_RECIPIENT": str(identity.to_public()),
            "CTAFLEET_BACKUP__IDENTITY_FILE": str(workdir / "key.txt"),
            "CTAFLEET_DATA_DIR": str(workdir / "data"),
        }
        cli = [sys.executable, "-m", "ctafleet.ops.backup.cli"]
        with contextlib.ExitStack() as stack:
            if args.storage == "azurite":
                ours_env["CTAFLEET_STORAGE__BACKEND"] = "azure"
                ours_env["CTAFLEET_STORAGE__AZURE_CONNECTION_STRING"] = stack.enter_context(
                    azurite(workdir)
                )
                ours_env["CTAFLEET_STORAGE__AZURE_CONTAINER"] = "bench"

            plain_dump = workdir / "plain.dump"
            t_plain_backup = timed(["pg_dump", "-Fc", "-d", source, "-f", str(plain_dump)], env)
            t_our_backup = timed([*cli, "create"], ours_env)
            asyncio.run(admin(url, f"CREATE DATABASE {plain_target}"))
            t_plain_restore = timed(["pg_restore", "-d", plain_target, str(plain_dump)], env)
            t_our_restore = timed(
                [*cli, "restore", "--latest", "--target-url",
                 with_database(url, our_target), "--yes", "--jobs", str(args.restore_jobs),
                 "--scratch-dir", str(workdir)],
                ours_env,
            )  # fmt: skip
        stored = (
            sum(p.stat().st_size for p in (workdir / "objects").rglob("*.age"))
            if (workdir / "objects").exists()
            else 0
        )

        def line(what: str, plain_s: float, ours_s: float) -> float:
            ratio = (mb / ours_s) / (mb / plain_s)
            verdict = "ok" if ratio >= GOAL_RATIO else "BELOW GOAL"
            print(
                f"{what:<8} plain {plain_s:7.1f} s {mb / plain_s:7.1f} MB/s | "
                f"ours {ours_s:7.1f} s {mb / ours_s:7.1f} MB/s | ratio {ratio:5.2f} "
                f"(goal >= {GOAL_RATIO}) {verdict}"
            )
            return ratio

        print()
        print(
            f"database {mb:.0f} MB; plain dump {plain_dump.stat().st_size / 2**20:.0f} MB"
            + (f"; encrypted backup {stored / 2**20:.0f} MB" if stored else "")
            + f"; storage {args.storage}; restore --jobs {args.restore_jobs}"
        )
        line("backup", t_plain_backup, t_our_backup)
        line("restore", t_plain_restore, t_our_restore)
        per_gb = t_our_restore / (mb / 1024)
        print(
            f"restore time (the restore part of the RTO): {t_our_restore:.1f} s, "
            f"{per_gb:.0f} s per GB (goal for 1 GB: < {RTO_GOAL_S_PER_GB:.0f} s) "
            f"{'ok' if per_gb < RTO_GOAL_S_PER_GB else 'ABOVE GOAL'}"
        )
        # The RTO as the drill measures it: restore of the latest backup into a scratch
        # database, verified against the source, timed to a database that serves.
        report_path = workdir / "drill.json"
        subprocess.run(
            [sys.executable, "-m", "ctafleet.ops.dr", "drill", "--mode", "logical",
             "--source-url", source_url, "--report", str(report_path),
             "--metrics-file", str(workdir / "drill.prom"), "--rto-target", "120"],
            env=ours_env, check=False,
        )  # fmt: skip
        report = json.loads(report_path.read_text()) if report_path.exists() else {}
        rto = report.get("rto_seconds")
        if rto is None:
            print(f"drill: no RTO measured (report: {report.get('error') or report})")
        else:
            print(
                f"drill (logical) RTO {rto:.1f} s for {mb:.0f} MB, "
                f"{rto / (mb / 1024):.0f} s per GB (goal for 1 GB: < "
                f"{RTO_GOAL_S_PER_GB:.0f} s) "
                f"{'ok' if rto / (mb / 1024) < RTO_GOAL_S_PER_GB else 'ABOVE GOAL'}"
            )
    finally:
        if not args.keep:
            asyncio.run(
                admin(
                    url,
                    *[
                        f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                        for name in (source, plain_target, our_target)
                    ],
                )
            )
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
