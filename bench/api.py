"""API request path: throughput, latency and CPU per request, as ratios to a bare ASGI endpoint.

For each backend (SQLite, PostgreSQL) this seeds the demo tenant (`ctafleet demo --no-serve`),
starts `ctafleet serve` (one uvicorn worker), records the exact bytes each measured endpoint
answers, and starts a bare ASGI endpoint (a FastAPI app with no middleware, dependencies or
database) that serves those same bytes from memory on the same server with the same flags:
the limit, what the server, the framework, the event loop and the client cost with no
application work at all. Then, in alternating rounds (app, bare, app, bare, ...), wrk with
16 connections drives:

    list     GET   /api/v1/vehicles?limit=50          (about 32 KB)
    get      GET   /api/v1/vehicles/{id}
    write    PATCH /api/v1/vehicles/{id}  {"notes": ...}  (a versioned update with its audit
                                                          event, spread over the fleet)
    healthz  GET   /healthz

and reports requests/s, p50/p95/p99 and the server's CPU per request (user + system time of
the server process, all threads, divided by the requests served), each the median of the
rounds, and the ratio app / bare (1.0: as fast as serving bytes from memory). Also the API's
RSS after the load and the time from starting `ctafleet serve` to its first answer.

    .venv/bin/python bench/api.py                      # both backends, 3 rounds of 5 s
    .venv/bin/python bench/api.py --backend sqlite --seconds 3
    .venv/bin/python bench/api.py --json results.json

Goals: list >= 0.3x, get >= 0.4x, healthz >= 0.8x, p95 < 50 ms at 16 connections on one
worker, API RSS <= 150 MB, `serve` ready in under 1.5 s. Needs `wrk` (Debian package) and, for
PostgreSQL, a superuser URL (--database-url, else CTAFLEET_TEST_DATABASE_URL, else
postgresql://postgres@127.0.0.1:5432/postgres): it creates and drops its own database and role.
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
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
CTAFLEET = str(VENV_BIN / "ctafleet")
CLK_TCK = os.sysconf("SC_CLK_TCK")

GOALS = {"list": 0.3, "get": 0.4, "healthz": 0.8}
P95_GOAL_MS = 50.0
RSS_GOAL_MB = 150.0
READY_GOAL_S = 1.5

WRK_SCRIPT = r"""
local method = os.getenv("BENCH_METHOD") or "GET"
local auth = os.getenv("BENCH_AUTH")
local paths = {}
for p in string.gmatch(os.getenv("BENCH_PATHS"), "[^,]+") do table.insert(paths, p) end
local counter = 0
local headers = {}
if auth and auth ~= "" then headers["Authorization"] = "Bearer " .. auth end
if method ~= "GET" then headers["Content-Type"] = "application/json" end
math.randomseed(os.time())

request = function()
  counter = counter + 1
  local path = paths[math.random(#paths)]
  if method == "GET" then
    return wrk.format("GET", path, headers)
  end
  return wrk.format(method, path, headers, '{"notes":"bench ' .. counter .. '"}')
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests":%d,"duration_us":%d,"errors":%d,"non2xx":%d,' ..
    '"p50_us":%d,"p95_us":%d,"p99_us":%d}\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(95), latency:percentile(99)))
end
"""

BARE_APP = r"""
import json, os, re, sys
import uvicorn
from fastapi import FastAPI, Request, Response

# The limit the goals are set against: a FastAPI app whose endpoints answer the recorded bytes
# from memory (no middleware, no dependencies, no database), on the same uvicorn and flags.
with open(os.environ["BENCH_BARE_RESPONSES"]) as fh:
    table = json.load(fh)
app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

def add(item):
    headers = {k: v for k, v in item["headers"] if k.lower() != "content-type"}
    media_type = dict((k.lower(), v) for k, v in item["headers"]).get("content-type")
    body = item["body"].encode()

    async def endpoint(request: Request) -> Response:
        await request.body()
        return Response(body, status_code=item["status"], headers=headers, media_type=media_type)

    app.add_api_route(item["template"], endpoint, methods=[item["method"]])

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
seen = set()
for item in table:
    # One route per template, as the API has: /api/v1/vehicles/{item_id}.
    item["template"] = UUID.sub("{item_id}", item["path"])
    if (item["method"], item["template"]) not in seen:
        seen.add((item["method"], item["template"]))
        add(item)

uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_config=None, server_header=False,
            proxy_headers=False, forwarded_allow_ips="127.0.0.1")
"""

# Headers the bare endpoint repeats so that both answers are the same size on the wire.
KEEP_HEADERS = {
    "content-type",
    "etag",
    "cache-control",
    "x-content-type-options",
    "referrer-policy",
    "x-frame-options",
    "content-security-policy",
    "cross-origin-opener-policy",
    "permissions-policy",
    "x-request-id",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (whole process)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def wait_ready(url: str, timeout: float = 30.0) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return time.perf_counter() - started
        except OSError:
            time.sleep(0.01)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


@contextlib.contextmanager
def process(cmd: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def http(
    method: str, url: str, token: str | None = None, body: Any = None
) -> tuple[int, Any, bytes]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


@dataclass
class Endpoint:
    name: str
    method: str
    paths: list[str]
    auth: bool = True


@dataclass
class Sample:
    rps: float
    cpu_ms: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    errors: int


@dataclass
class Result:
    backend: str
    endpoint: str
    app: list[Sample] = field(default_factory=list)
    bare: list[Sample] = field(default_factory=list)

    @staticmethod
    def _median(samples: list[Sample], attr: str) -> float:
        return float(statistics.median(getattr(s, attr) for s in samples))

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"backend": self.backend, "endpoint": self.endpoint}
        for side in ("app", "bare"):
            samples = getattr(self, side)
            out[side] = {a: round(self._median(samples, a), 3) for a in Sample.__annotations__}
        out["ratio"] = round(out["app"]["rps"] / out["bare"]["rps"], 3)
        out["cpu_ratio"] = round(out["bare"]["cpu_ms"] / out["app"]["cpu_ms"], 3)
        return out


def run_wrk(
    port: int, endpoint: Endpoint, token: str, seconds: int, connections: int, script: Path
) -> dict[str, Any]:
    env = {
        **os.environ,
        "BENCH_METHOD": endpoint.method,
        "BENCH_AUTH": token if endpoint.auth else "",
        "BENCH_PATHS": ",".join(endpoint.paths),
    }
    cmd = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, seconds)}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        f"http://127.0.0.1:{port}",
    ]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    line = next(x for x in out.splitlines() if x.startswith("BENCH "))
    return dict(json.loads(line[6:]))


def measure(
    pid: int,
    port: int,
    endpoint: Endpoint,
    token: str,
    seconds: int,
    connections: int,
    script: Path,
) -> Sample:
    before = cpu_seconds(pid)
    res = run_wrk(port, endpoint, token, seconds, connections, script)
    used = cpu_seconds(pid) - before
    requests = max(1, res["requests"])
    return Sample(
        rps=requests / (res["duration_us"] / 1e6),
        cpu_ms=used * 1000 / requests,
        p50_ms=res["p50_us"] / 1000,
        p95_ms=res["p95_us"] / 1000,
        p99_ms=res["p99_us"] / 1000,
        errors=res["errors"] + res["non2xx"],
    )


@dataclass
class BackendSetup:
    name: str
    env: dict[str, str]
    cleanup: list[Any] = field(default_factory=list)


def sqlite_backend(workdir: Path) -> BackendSetup:
    data = workdir / "sqlite-data"
    return BackendSetup("sqlite", {"CTAFLEET_DATA_DIR": str(data)})


def postgres_backend(workdir: Path, server_url: str) -> BackendSetup:
    import asyncpg
    from sqlalchemy.engine import make_url

    suffix = uuid.uuid4().hex[:8]
    name, role = f"ctafleet_bench_{suffix}", f"ctafleet_bench_app_{suffix}"
    u = make_url(server_url)

    async def run(*statements: str) -> None:
        conn = await asyncpg.connect(
            host=u.host or "127.0.0.1",
            port=u.port or 5432,
            user=u.username or "postgres",
            password=u.password,
            database=u.database or "postgres",
        )
        try:
            for s in statements:
                await conn.execute(s)
        finally:
            await conn.close()

    asyncio.run(run(f"CREATE DATABASE {name}", f"CREATE ROLE {role} LOGIN NOSUPERUSER NOBYPASSRLS"))
    owner = u.set(drivername="postgresql+asyncpg", database=name)
    app = owner.set(username=role, password=None)
    setup = BackendSetup(
        "postgres",
        {
            "CTAFLEET_DATA_DIR": str(workdir / "pg-data"),
            "CTAFLEET_DATABASE__URL": app.render_as_string(hide_password=False),
            "CTAFLEET_DATABASE__ADMIN_URL": owner.render_as_string(hide_password=False),
            "CTAFLEET_DATABASE__APP_ROLE": role,
        },
    )
    setup.cleanup.append(
        lambda: asyncio.run(
            run(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", f"DROP ROLE IF EXISTS {role}")
        )
    )
    return setup


def bench_backend(
    setup: BackendSetup, args: argparse.Namespace, workdir: Path, script: Path
) -> tuple[list[Result], dict[str, Any]]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CTAFLEET_")},
        # CTAFLEET_BENCH_ENV="A=1 B=2": extra settings for one run (a pool size, say).
        **dict(x.split("=", 1) for x in os.environ.get("CTAFLEET_BENCH_ENV", "").split()),
        "CTAFLEET_ENVIRONMENT": "development",
        "CTAFLEET_AUTH__SECRET_KEY": "bench-" + uuid.uuid4().hex + uuid.uuid4().hex,
        # The limiter stays in the path; its limit is out of the way of a load test.
        "CTAFLEET_AUTH__API_RATE_LIMIT": "100000000/minute",
        "CTAFLEET_OBSERVABILITY__LOG_LEVEL": "WARNING",
        **setup.env,
    }
    print(f"[{setup.name}] seeding the demo tenant ({args.vehicles} vehicles)...", flush=True)
    started = time.perf_counter()
    subprocess.run(
        [CTAFLEET, "demo", "--no-serve", "--vehicles", str(args.vehicles)],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    print(f"[{setup.name}] seeded in {time.perf_counter() - started:.1f} s", flush=True)
    creds = json.loads((Path(env["CTAFLEET_DATA_DIR"]) / "demo-credentials.json").read_text())
    admin = next(u for u in creds["users"] if u["role"] == "admin")

    port = free_port()
    serve = [CTAFLEET, "serve", "--port", str(port)]
    ready: list[float] = []
    for i in range(3):
        with process(serve, env, workdir / f"{setup.name}-ready-{i}.log"):
            t0 = time.perf_counter()
            wait_ready(f"http://127.0.0.1:{port}/healthz")
            ready.append(time.perf_counter() - t0)

    results: list[Result] = []
    extra: dict[str, Any] = {"serve_ready_s": round(statistics.median(ready), 3)}
    with process(serve, env, workdir / f"{setup.name}-serve.log") as api:
        wait_ready(f"http://127.0.0.1:{port}/healthz")
        base = f"http://127.0.0.1:{port}"
        status, _, body = http(
            "POST",
            base + "/api/v1/auth/login",
            body={"email": admin["email"], "password": admin["password"]},
        )
        assert status == 200, body
        token = json.loads(body)["access_token"]
        status, _, body = http("GET", base + "/api/v1/vehicles?limit=500", token)
        assert status == 200, body
        ids = [v["id"] for v in json.loads(body)["data"]]
        endpoints = [
            Endpoint("list", "GET", ["/api/v1/vehicles?limit=50"]),
            Endpoint("get", "GET", [f"/api/v1/vehicles/{ids[0]}"]),
            Endpoint("write", "PATCH", [f"/api/v1/vehicles/{i}" for i in ids]),
            Endpoint("healthz", "GET", ["/healthz"], auth=False),
        ]
        # The bare app answers each request with the bytes the API gave for its first path.
        table = []
        for ep in endpoints:
            path = ep.paths[0]
            body_in = {"notes": "bench 0"} if ep.method != "GET" else None
            status, headers, body = http(
                ep.method, base + path, token if ep.auth else None, body_in
            )
            assert status == 200, (ep.name, status, body)
            kept = [(k, v) for k, v in headers.items() if k.lower() in KEEP_HEADERS]
            for p in ep.paths:
                table.append(
                    {
                        "method": ep.method,
                        "path": p.split("?")[0],
                        "status": status,
                        "headers": kept,
                        "body": body.decode(),
                    }
                )
            extra.setdefault("body_bytes", {})[ep.name] = len(body)
        responses = workdir / f"{setup.name}-bare.json"
        responses.write_text(json.dumps(table))
        bare_port = free_port()
        bare_py = workdir / "bare_app.py"
        bare_py.write_text(BARE_APP)
        bare_env = {**env, "BENCH_BARE_RESPONSES": str(responses)}
        with process(
            [sys.executable, str(bare_py), str(bare_port)], bare_env, workdir / "bare.log"
        ) as bare:
            wait_ready(f"http://127.0.0.1:{bare_port}/healthz")
            for ep in endpoints:
                result = Result(setup.name, ep.name)
                # Warm both (caches, connection pools, JIT-free but allocator-warm).
                measure(api.pid, port, ep, token, 1, args.connections, script)
                measure(bare.pid, bare_port, ep, token, 1, args.connections, script)
                for _ in range(args.rounds):
                    result.app.append(
                        measure(api.pid, port, ep, token, args.seconds, args.connections, script)
                    )
                    result.bare.append(
                        measure(
                            bare.pid, bare_port, ep, token, args.seconds, args.connections, script
                        )
                    )
                results.append(result)
                s = result.summary()
                print(
                    f"[{setup.name}] {ep.name:<8} app {s['app']['rps']:>8.0f}/s "
                    f"{s['app']['cpu_ms']:.3f} ms CPU  p95 {s['app']['p95_ms']:.1f} ms | bare "
                    f"{s['bare']['rps']:>8.0f}/s {s['bare']['cpu_ms']:.3f} ms CPU | ratio "
                    f"{s['ratio']:.2f}x (CPU {s['cpu_ratio']:.2f}x) errors "
                    f"{s['app']['errors']:.0f}",
                    flush=True,
                )
        extra["rss_mb"] = round(rss_mb(api.pid), 1)
    return results, extra


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--seconds", type=int, default=5, help="Length of one round.")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--vehicles", type=int, default=120)
    parser.add_argument(
        "--database-url",
        default=os.environ.get("CTAFLEET_TEST_DATABASE_URL")
        or "postgresql://postgres@127.0.0.1:5432/postgres",
    )
    parser.add_argument("--json", type=Path, help="Also write the results here.")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("error: wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2

    all_results: list[dict[str, Any]] = []
    extras: dict[str, Any] = {}
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="ctafleet-bench-") as tmp:
        workdir = Path(tmp)
        script = workdir / "bench.lua"
        script.write_text(WRK_SCRIPT)
        backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
        for name in backends:
            setup = (
                sqlite_backend(workdir)
                if name == "sqlite"
                else postgres_backend(workdir, args.database_url)
            )
            try:
                results, extra = bench_backend(setup, args, workdir, script)
            finally:
                for fn in setup.cleanup:
                    fn()
            extras[name] = extra
            for r in results:
                s = r.summary()
                all_results.append(s)
                goal = GOALS.get(r.endpoint)
                if goal is not None and s["ratio"] < goal:
                    failures.append(f"{name} {r.endpoint}: ratio {s['ratio']} < {goal}")
                if s["app"]["p95_ms"] >= P95_GOAL_MS:
                    failures.append(f"{name} {r.endpoint}: p95 {s['app']['p95_ms']} ms")
                if s["app"]["errors"]:
                    failures.append(f"{name} {r.endpoint}: {s['app']['errors']} errors")
            if extra["rss_mb"] > RSS_GOAL_MB:
                failures.append(f"{name}: RSS {extra['rss_mb']} MB > {RSS_GOAL_MB}")
            if extra["serve_ready_s"] > READY_GOAL_S:
                failures.append(f"{name}: serve ready in {extra['serve_ready_s']} s")

    print()
    print(
        f"{'backend':<9}{'endpoint':<9}{'app/s':>8}{'bare/s':>9}{'ratio':>7}{'goal':>6}"
        f"{'CPU ms':>8}{'bare CPU':>9}{'p50':>7}{'p95':>7}{'p99':>7}"
    )
    for s in all_results:
        goal = GOALS.get(s["endpoint"])
        print(
            f"{s['backend']:<9}{s['endpoint']:<9}{s['app']['rps']:>8.0f}{s['bare']['rps']:>9.0f}"
            f"{s['ratio']:>7.2f}{(f'{goal:.1f}' if goal else '-'):>6}{s['app']['cpu_ms']:>8.3f}"
            f"{s['bare']['cpu_ms']:>9.3f}{s['app']['p50_ms']:>7.1f}{s['app']['p95_ms']:>7.1f}"
            f"{s['app']['p99_ms']:>7.1f}"
        )
    for name, extra in extras.items():
        print(
            f"{name}: API RSS {extra['rss_mb']} MB (goal <= {RSS_GOAL_MB:.0f}), serve ready in "
            f"{extra['serve_ready_s']} s (goal < {READY_GOAL_S}), bodies {extra['body_bytes']}"
        )
    if args.json:
        args.json.write_text(json.dumps({"results": all_results, "extra": extras}, indent=2))
    if failures:
        print("\nGOALS MISSED:\n  " + "\n  ".join(failures))
        return 1
    print("\nall goals met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
