"""Telemetry ingest on PostgreSQL: each stage as a ratio to its limit, measured side by side.

Every stage sends fix times later than the stage before it (a device's points arrive in
order, as they do from real devices: late points make the worker replay derived data).

One run seeds a demo tenant (`ctafleet demo --no-serve`: devices with credentials) in a
database of its own, then measures, in this order:

    writer      the worker's batch writer (COPY into staging, insert-on-conflict, last
                positions: `writer.write` + `tracking.apply`) in transactions of --batch
                points, against raw `COPY` of the same rows straight into `positions` in
                transactions of the same size (the limit) and one autocommitted INSERT per
                point (how the best-known open-source tracking server writes), alternating
                rounds; the full in-batch stages (derived data included) reported beside
    end-to-end  `ctafleet serve` and `ctafleet worker` (Redis queue) running; wrk posts JSON
                batches (--points-per-request, each device's own credential) for --seconds;
                points/s from the first request to the last row committed, and the API's and
                worker's CPU per 1,000 points; as ratios to the raw COPY and the per-point
                INSERT rates above
    osmand      one point per OsmAnd request (what phones send), wrk at --connections 64,
                against a bare ASGI endpoint (answers 200, empty body, nothing else) served
                by the same uvicorn with the same flags
    steady      a steady --steady-rate points/s of JSON batches for --sustain seconds, with a
                probe point over OsmAnd every 200 ms: ack -> visible through the API
                (GET /api/v1/vehicles/{id}/position shows it), p50/p99; RSS of the API and the
                worker sampled through the run (flat, not growing)

    .venv/bin/python bench/ingest.py                       # the full run (about 15 minutes)
    .venv/bin/python bench/ingest.py --sustain 60 --seconds 10 --writer-points 100000

Goals (issue figures): end-to-end >= 50,000 points/s and >= 17x the per-point INSERT; writer
>= 0.5x raw COPY; osmand >= 0.5x the bare endpoint; steady p99 < 1 s. Needs wrk
(scripts/install-bench-tools.sh), PostgreSQL (a superuser URL: --database-url, else
CTAFLEET_TEST_DATABASE_URL, else postgresql://postgres@127.0.0.1:5432/postgres; it creates
and drops its own database and role) and Redis (--redis-url, default
redis://127.0.0.1:6379/14; keys under a prefix of its own, deleted afterwards).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

# bench/api.py's helpers, found through the path above.
from api import (
    CTAFLEET,
    cpu_seconds,
    free_port,
    http,
    postgres_backend,
    process,
    rss_mb,
    wait_ready,
)

GOALS = {
    "end_to_end_points_s": 50_000,
    "end_to_end_vs_per_point": 17.0,
    "writer_vs_copy": 0.5,
    "osmand_vs_bare": 0.5,
    "steady_p99_s": 1.0,
}

BATCH_LUA = (
    r"""
-- JSON batches of BENCH_N points, device after device, each with its own credential and
-- fix times no other request uses (one wrk thread: one counter).
local creds = {}
for line in io.lines(os.getenv("BENCH_CREDS")) do table.insert(creds, line) end
local n = tonumber(os.getenv("BENCH_N"))
local t0 = tonumber(os.getenv("BENCH_T0"))
local counter = 0
request = function()
  local i = counter % #creds + 1
  local round = math.floor(counter / #creds)
  counter = counter + 1
  local parts = {}
  for k = 1, n do
    parts[k] = string.format('{"time":%d,"lat":%.6f,"lon":%.6f,"speed":%d}',
      t0 + round * n + k, 41.80 + k * 1e-5, -87.60 + i * 1e-4, k % 30)
  end
  local body = '{"points":[' .. table.concat(parts, ",") .. ']}'
  return wrk.format("POST", "/api/v1/telemetry",
    {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. creds[i]}, body)
end
"""
    + "\n"
)

OSMAND_LUA = r"""
-- One fix per request, as Traccar Client sends it: GET with the query string.
local devices = {}
for line in io.lines(os.getenv("BENCH_DEVICES")) do
  local id, cred = line:match("([^ ]+) ([^ ]+)")
  table.insert(devices, {id, cred})
end
local t0 = tonumber(os.getenv("BENCH_T0"))
local counter = 0
request = function()
  local d = devices[counter % #devices + 1]
  local round = math.floor(counter / #devices)
  counter = counter + 1
  return wrk.format("GET", string.format(
    "/ingest/osmand?id=%s&token=%s&lat=41.%06d&lon=-87.6&timestamp=%d&speed=12&batt=80",
    d[1], d[2], round % 1000000, t0 + round))
end
"""

DONE_LUA = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests":%d,"duration_us":%d,"errors":%d,"non2xx":%d,"p50_us":%d,"p99_us":%d}\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99)))
end
"""

BARE_ASGI = r"""
import sys
import uvicorn

# The limit of the OsmAnd figure: an ASGI app that reads the request and answers 200 with an
# empty body, on the same server and flags as `ctafleet serve`.
async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    while (await receive()).get("more_body"):
        pass
    headers = [(b"content-length", b"0")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b""})

uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_config=None, server_header=False,
            proxy_headers=False, access_log=False)
"""


def wrk(
    port: int, script: Path, env: dict[str, str], *, seconds: float, connections: int
) -> dict[str, Any]:
    cmd = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        f"http://127.0.0.1:{port}",
    ]
    out = subprocess.run(
        cmd, env={**os.environ, **env}, capture_output=True, text=True, check=True
    ).stdout
    line = next(x for x in out.splitlines() if x.startswith("BENCH "))
    return dict(json.loads(line[6:]))


# --- the writer stage, in this process --------------------------------------------------------


async def writer_stage(args: argparse.Namespace, env: dict[str, str]) -> dict[str, Any]:
    import asyncpg

    from ctafleet.config import load_settings
    from ctafleet.db.engine import Database
    from ctafleet.observability.logging import configure_logging
    from ctafleet.telematics.ingest import runtime, tracking, writer
    from ctafleet.telematics.ingest.envelope import Envelope
    from ctafleet.telematics.points import Point

    os.environ.update(env)
    settings = load_settings()
    configure_logging(settings)  # the settings' level (WARNING), not structlog's default
    db = Database(settings.database_url, settings)
    owner = env["CTAFLEET_DATABASE__ADMIN_URL"].replace("postgresql+asyncpg", "postgresql")
    conn = await asyncpg.connect(owner)
    devices = await conn.fetch("SELECT id, tenant_id, vehicle_id, unique_id FROM devices")
    in_batch = runtime.stages(settings, None).in_batch
    per_env = 100  # points per envelope: a device's JSON batch
    start = datetime.now(UTC) - timedelta(days=20)
    window = [0]

    def envelopes(points: int) -> list[Envelope]:
        """Fresh fix times for every call (a new window), so nothing is a duplicate."""
        out = []
        base = start + timedelta(seconds=window[0])
        window[0] += points // len(devices) + per_env + 1
        made = 0
        k = 0
        while made < points:
            d = devices[k % len(devices)]
            offset = (k // len(devices)) * per_env
            pts = tuple(
                Point(
                    device_uid=d["unique_id"],
                    fix_time=base + timedelta(seconds=offset + j),
                    lat=41.8 + j * 1e-5,
                    lon=-87.6,
                    speed_mps=float(j % 30),
                    battery_pct=80.0,
                )
                for j in range(per_env)
            )
            out.append(
                Envelope(
                    tenant_id=d["tenant_id"],
                    device_id=d["id"],
                    vehicle_id=d["vehicle_id"],
                    received_at=base,
                    points=pts,
                )
            )
            made += per_env
            k += 1
        return out

    def batches(envs: list[Envelope]) -> list[list[Envelope]]:
        size = max(1, args.batch // per_env)
        return [envs[i : i + size] for i in range(0, len(envs), size)]

    async def run_writer(envs: list[Envelope], stages: Any) -> float:
        t0 = time.perf_counter()
        for chunk in batches(envs):
            async with db.system_session() as session, session.begin():
                result = await writer.write(session, chunk)
                for stage in stages:
                    await stage(session, result, datetime.now(UTC))
        return time.perf_counter() - t0

    def rows(envs: list[Envelope]) -> list[tuple[Any, ...]]:
        return [writer.row_of(e, p) for e in envs for p in e.points]

    async def run_copy(envs: list[Envelope]) -> float:
        records = rows(envs)
        t0 = time.perf_counter()
        for i in range(0, len(records), args.batch):
            async with conn.transaction():
                await conn.copy_records_to_table(
                    "positions", records=records[i : i + args.batch], columns=writer.COLUMNS
                )
        return time.perf_counter() - t0

    async def run_per_point(envs: list[Envelope]) -> float:
        records = rows(envs)
        columns = ", ".join(writer.COLUMNS)
        marks = ", ".join(f"${i + 1}" for i in range(len(writer.COLUMNS)))
        sql = f"INSERT INTO positions ({columns}) VALUES ({marks}) ON CONFLICT DO NOTHING"
        t0 = time.perf_counter()
        for r in records:
            await conn.execute(sql, *r)  # autocommit: one transaction per point
        return time.perf_counter() - t0

    # Partitions of the windows exist before timing (the worker creates them ahead).
    async with db.system_session() as session, session.begin():
        await writer.ensure_partitions_ahead(session, start)
        await writer.ensure_partitions_ahead(session, datetime.now(UTC))
    n = args.writer_points
    await run_writer(envelopes(min(n, 20_000)), [tracking.apply])  # warm up
    await run_copy(envelopes(min(n, 20_000)))
    rates: dict[str, list[float]] = {"writer": [], "copy": [], "stages": []}
    for _ in range(args.rounds):
        rates["writer"].append(n / await run_writer(envelopes(n), [tracking.apply]))
        rates["copy"].append(n / await run_copy(envelopes(n)))
        rates["stages"].append(n / await run_writer(envelopes(n), in_batch))
    per_point_n = min(n, args.per_point)
    per_point = per_point_n / await run_per_point(envelopes(per_point_n))
    await conn.close()
    await db.dispose()
    out = {k: statistics.median(v) for k, v in rates.items()}
    out["per_point"] = per_point
    return out


# --- processes --------------------------------------------------------------------------------


def positions_count(env: dict[str, str]) -> int:
    import asyncpg

    async def run() -> int:
        url = env["CTAFLEET_DATABASE__ADMIN_URL"].replace("postgresql+asyncpg", "postgresql")
        conn = await asyncpg.connect(url)
        try:
            return int(await conn.fetchval("SELECT count(*) FROM positions"))
        finally:
            await conn.close()

    return asyncio.run(run())


def wait_committed(env: dict[str, str], target: int, timeout: float = 300) -> float:
    """Poll until `positions` holds `target` rows; the time it got there."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if positions_count(env) >= target:
            return time.perf_counter()
        time.sleep(0.05)
    raise RuntimeError(f"positions did not reach {target} rows within {timeout} s")


def end_to_end(
    args: argparse.Namespace, env: dict[str, str], work: Path, port: int, api: Any, worker: Any
) -> dict[str, Any]:
    creds = work / "creds.txt"
    devices = json.loads((Path(env["CTAFLEET_DATA_DIR"]) / "demo-devices.json").read_text())
    creds.write_text("".join(d["credential"] + "\n" for d in devices))
    script = work / "batch.lua"
    script.write_text(BATCH_LUA + DONE_LUA)
    t0 = int(time.time()) - 3 * 86400
    lua_env = {"BENCH_CREDS": str(creds), "BENCH_N": str(args.points_per_request)}
    # Warm up (pools, caches), then wait for it to be written.
    before = positions_count(env)
    warm = wrk(port, script, {**lua_env, "BENCH_T0": str(t0)}, seconds=2, connections=8)
    wait_committed(env, before + (warm["requests"] - warm["non2xx"]) * args.points_per_request)
    before = positions_count(env)
    cpu_api, cpu_worker = cpu_seconds(api.pid), cpu_seconds(worker.pid)
    started = time.perf_counter()
    res = wrk(
        port,
        script,
        {**lua_env, "BENCH_T0": str(t0 + 86400)},
        seconds=args.seconds,
        connections=args.batch_connections,
    )
    accepted = (res["requests"] - res["non2xx"]) * args.points_per_request
    sent_s = time.perf_counter() - started
    committed_at = wait_committed(env, before + accepted)
    elapsed = committed_at - started
    return {
        "points": accepted,
        "requests": res["requests"],
        "refused": res["non2xx"],
        "errors": res["errors"],
        "sent_s": sent_s,
        "elapsed_s": elapsed,
        "points_s": accepted / elapsed,
        "api_cpu_ms_per_1k": (cpu_seconds(api.pid) - cpu_api) * 1e6 / max(accepted, 1),
        "worker_cpu_ms_per_1k": (cpu_seconds(worker.pid) - cpu_worker) * 1e6 / max(accepted, 1),
        "p99_ms": res["p99_us"] / 1000,
    }


def osmand(
    args: argparse.Namespace, env: dict[str, str], work: Path, port: int, api: Any
) -> dict[str, Any]:
    devices = json.loads((Path(env["CTAFLEET_DATA_DIR"]) / "demo-devices.json").read_text())
    listing = work / "devices.txt"
    listing.write_text("".join(f"{d['unique_id']} {d['credential']}\n" for d in devices))
    script = work / "osmand.lua"
    script.write_text(OSMAND_LUA + DONE_LUA)
    bare_py = work / "bare_asgi.py"
    bare_py.write_text(BARE_ASGI)
    bare_port = free_port()
    app: list[dict[str, float]] = []
    bare: list[dict[str, float]] = []
    t0 = int(time.time()) - 12 * 3600
    with process([sys.executable, str(bare_py), str(bare_port)], env, work / "bare.log") as b:
        wait_ready(f"http://127.0.0.1:{bare_port}/")
        for r in range(args.rounds + 1):  # the first round warms both up
            for target_port, pid, into in ((port, api.pid, app), (bare_port, b.pid, bare)):
                lua_env = {"BENCH_DEVICES": str(listing), "BENCH_T0": str(t0 + r * 5000)}
                cpu = cpu_seconds(pid)
                res = wrk(
                    target_port,
                    script,
                    lua_env,
                    seconds=args.osmand_seconds,
                    connections=args.connections,
                )
                if r == 0:
                    continue
                requests = max(res["requests"], 1)
                into.append(
                    {
                        "rps": requests / (res["duration_us"] / 1e6),
                        "cpu_ms": (cpu_seconds(pid) - cpu) * 1000 / requests,
                        "p99_ms": res["p99_us"] / 1000,
                        "bad": res["non2xx"] + res["errors"],
                    }
                )

    def med(rows: list[dict[str, float]], key: str) -> float:
        return float(statistics.median(x[key] for x in rows))

    return {
        "app_rps": med(app, "rps"),
        "bare_rps": med(bare, "rps"),
        "app_cpu_ms": med(app, "cpu_ms"),
        "bare_cpu_ms": med(bare, "cpu_ms"),
        "app_p99_ms": med(app, "p99_ms"),
        "bad": sum(x["bad"] for x in app),
    }


async def steady(
    args: argparse.Namespace, env: dict[str, str], port: int, api: Any, worker: Any
) -> dict[str, Any]:
    """A steady load of JSON batches plus OsmAnd probes whose visibility is timed."""
    import httpx

    base = f"http://127.0.0.1:{port}"
    data_dir = Path(env["CTAFLEET_DATA_DIR"])
    devices = json.loads((data_dir / "demo-devices.json").read_text())
    users = json.loads((data_dir / "demo-credentials.json").read_text())["users"]
    admin = next(u for u in users if u["role"] == "admin")
    probe, load = devices[0], devices[1:]
    latencies: list[float] = []
    rss: list[tuple[float, float, float]] = []
    sent = 0
    limits = httpx.Limits(max_connections=32)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=10) as client:
        r = await client.post(
            "/api/v1/auth/login", json={"email": admin["email"], "password": admin["password"]}
        )
        r.raise_for_status()
        headers = {"Authorization": f"Bearer {r.json()['access_token']}"}
        r = await client.get("/api/v1/devices", params={"limit": 500}, headers=headers)
        r.raise_for_status()
        vehicle = next(d for d in r.json()["data"] if d["unique_id"] == probe["unique_id"])[
            "vehicle_id"
        ]
        stop = time.monotonic() + args.sustain
        per_request = 100
        interval = per_request / args.steady_rate
        t0 = int(time.time()) - 5 * 3600

        async def send_load() -> None:
            nonlocal sent
            k = 0
            next_at = time.monotonic()
            pending: set[asyncio.Task[Any]] = set()
            while time.monotonic() < stop:
                d = load[k % len(load)]
                rnd = k // len(load)
                body = {
                    "points": [
                        {"time": t0 + rnd * per_request + j, "lat": 41.8, "lon": -87.6}
                        for j in range(per_request)
                    ]
                }
                task = asyncio.create_task(
                    client.post(
                        "/api/v1/telemetry",
                        json=body,
                        headers={"Authorization": f"Bearer {d['credential']}"},
                    )
                )
                pending.add(task)
                task.add_done_callback(pending.discard)
                sent += per_request
                k += 1
                next_at += interval
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            await asyncio.gather(*pending, return_exceptions=True)

        async def probes() -> None:
            n = 0
            while time.monotonic() < stop:
                fix_ms = int(time.time() * 1000) - 100  # milliseconds: one fix time per probe
                params = {
                    "id": probe["unique_id"],
                    "token": probe["credential"],
                    "lat": f"41.9{n % 1000:03d}",
                    "lon": "-87.6",
                    "timestamp": str(fix_ms),
                }
                r = await client.get("/ingest/osmand", params=params)
                acked = time.perf_counter()
                if r.status_code == 200:
                    want = datetime.fromtimestamp(fix_ms / 1000, UTC)
                    while time.perf_counter() - acked < 10:
                        got = await client.get(
                            f"/api/v1/vehicles/{vehicle}/position", headers=headers
                        )
                        if got.status_code == 200:
                            seen = datetime.fromisoformat(got.json()["fix_time"])
                            if seen >= want:
                                latencies.append(time.perf_counter() - acked)
                                break
                        await asyncio.sleep(0.01)
                n += 1
                await asyncio.sleep(max(0.0, 0.2 - (time.perf_counter() - acked)))

        async def sample_rss() -> None:
            started = time.monotonic()
            while time.monotonic() < stop:
                rss.append((time.monotonic() - started, rss_mb(api.pid), rss_mb(worker.pid)))
                await asyncio.sleep(max(1.0, args.sustain / 10))

        await asyncio.gather(send_load(), probes(), sample_rss())
    latencies.sort()

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else 0.0

    return {"probes": len(latencies), "p50_s": pct(0.5), "p99_s": pct(0.99), "rss": rss}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    parser.add_argument("--vehicles", type=int, default=200, help="Devices sending.")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=2000, help="Points per transaction.")
    parser.add_argument("--writer-points", type=int, default=200_000)
    parser.add_argument("--per-point", type=int, default=5000, help="Per-point INSERTs timed.")
    parser.add_argument("--seconds", type=float, default=20, help="End-to-end load time.")
    parser.add_argument("--points-per-request", type=int, default=500)
    parser.add_argument("--batch-connections", type=int, default=8)
    parser.add_argument("--osmand-seconds", type=float, default=5)
    parser.add_argument("--connections", type=int, default=64, help="OsmAnd concurrency.")
    parser.add_argument("--steady-rate", type=float, default=5000, help="Points/s.")
    parser.add_argument("--sustain", type=float, default=600, help="Seconds of steady load.")
    parser.add_argument("--json", type=Path, help="Write the figures here too.")
    parser.add_argument("--skip", default="", help="Comma-separated stages to skip.")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    server = args.database_url or os.environ.get(
        "CTAFLEET_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
    )
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="ctafleet-bench-ingest-") as tmp:
        work = Path(tmp)
        setup = postgres_backend(work, server)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("CTAFLEET_")},
            "CTAFLEET_ENVIRONMENT": "development",
            "CTAFLEET_AUTH__SECRET_KEY": "bench-" + uuid.uuid4().hex + uuid.uuid4().hex,
            "CTAFLEET_AUTH__API_RATE_LIMIT": "100000000/minute",
            "CTAFLEET_OBSERVABILITY__LOG_LEVEL": "WARNING",
            "CTAFLEET_REDIS__URL": args.redis_url,
            "CTAFLEET_TELEMETRY__QUEUE_PREFIX": prefix,
            "CTAFLEET_TELEMETRY__QUEUE_MAX_ENTRIES": "1000000",
            **setup.env,
        }
        try:
            print(f"seeding {args.vehicles} devices...", flush=True)
            subprocess.run(
                [CTAFLEET, "demo", "--no-serve", "--vehicles", str(args.vehicles)],
                env=env,
                check=True,
                stdout=subprocess.DEVNULL,
            )
            if "writer" not in skip:
                w = asyncio.run(writer_stage(args, env))
                figures["writer"] = w
                print(
                    f"writer      {w['writer']:>10,.0f} points/s  {w['writer'] / w['copy']:.2f}x "
                    f"raw COPY ({w['copy']:,.0f}/s; goal >= {GOALS['writer_vs_copy']}x)  "
                    f"{w['writer'] / w['per_point']:.1f}x per-point INSERT "
                    f"({w['per_point']:,.0f}/s)\n"
                    f"            with every in-batch stage {w['stages']:>10,.0f} points/s  "
                    f"{w['stages'] / w['copy']:.2f}x raw COPY",
                    flush=True,
                )
            port = free_port()
            serve = [CTAFLEET, "serve", "--port", str(port)]
            with (
                process(serve, env, work / "serve.log") as api,
                process([CTAFLEET, "worker"], env, work / "worker.log") as worker,
            ):
                wait_ready(f"http://127.0.0.1:{port}/healthz")
                status, _, body = http("GET", f"http://127.0.0.1:{port}/readyz")
                assert status == 200, body
                if "end-to-end" not in skip:
                    e = end_to_end(args, env, work, port, api, worker)
                    figures["end_to_end"] = e
                    w = figures.get("writer", {})
                    ratios = ""
                    if w:
                        ratios = (
                            f"  {e['points_s'] / w['copy']:.2f}x raw COPY  "
                            f"{e['points_s'] / w['per_point']:.1f}x per-point INSERT "
                            f"(goal >= {GOALS['end_to_end_vs_per_point']}x)"
                        )
                    print(
                        f"end-to-end  {e['points_s']:>10,.0f} points/s (goal >= "
                        f"{GOALS['end_to_end_points_s']:,}){ratios}\n"
                        f"            {e['points']:,} points in {e['elapsed_s']:.1f} s "
                        f"(sent in {e['sent_s']:.1f} s, {e['refused']} refused), CPU per "
                        f"1,000 points: api {e['api_cpu_ms_per_1k']:.1f} ms, worker "
                        f"{e['worker_cpu_ms_per_1k']:.1f} ms; request p99 {e['p99_ms']:.0f} ms",
                        flush=True,
                    )
                if "osmand" not in skip:
                    o = osmand(args, env, work, port, api)
                    figures["osmand"] = o
                    print(
                        f"osmand      {o['app_rps']:>10,.0f} requests/s  "
                        f"{o['app_rps'] / o['bare_rps']:.2f}x bare ASGI ({o['bare_rps']:,.0f}/s; "
                        f"goal >= {GOALS['osmand_vs_bare']}x) at {args.connections} "
                        f"connections; CPU {o['app_cpu_ms']:.3f} ms/request (bare "
                        f"{o['bare_cpu_ms']:.3f}); p99 {o['app_p99_ms']:.0f} ms; "
                        f"{o['bad']:.0f} refused",
                        flush=True,
                    )
                if "steady" not in skip:
                    s = asyncio.run(steady(args, env, port, api, worker))
                    figures["steady"] = s
                    print(
                        f"steady      {args.steady_rate:,.0f} points/s for {args.sustain:.0f} s: "
                        f"ack -> visible p50 {s['p50_s'] * 1000:.0f} ms, p99 "
                        f"{s['p99_s'] * 1000:.0f} ms over {s['probes']} probes (goal p99 < "
                        f"{GOALS['steady_p99_s']} s)",
                        flush=True,
                    )
                    for at, api_mb, worker_mb in s["rss"]:
                        print(
                            f"            t={at:>5.0f} s  RSS api {api_mb:.0f} MB, worker "
                            f"{worker_mb:.0f} MB"
                        )
        finally:
            for cleanup in setup.cleanup:
                cleanup()
            _drop_redis(args.redis_url, prefix)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=str))
    return 0


def _drop_redis(url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(f"{prefix}:*"))
    if keys:
        client.delete(*keys)
    client.close()


if __name__ == "__main__":
    sys.exit(main())
