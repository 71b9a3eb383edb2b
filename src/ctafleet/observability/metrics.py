"""Prometheus metrics of every CTAFleet process.

Each process (api, worker, mqtt bridge, qa services) serves its own `/metrics`; in Kubernetes
each runs as one process per container and is scraped per pod. Several processes behind one
port (`uvicorn --workers N`) are supported in prometheus-client's multiprocess mode: set
`PROMETHEUS_MULTIPROC_DIR` to an empty directory shared by the processes.

docs/observability.md lists every metric; a test checks that each listed metric is exposed.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client import multiprocess as _multiprocess
from starlette.types import Scope

from ctafleet import __version__

NAMESPACE = "ctafleet"
# Dense around the 300 ms latency SLO so the SLI (share of requests under 0.3 s) is exact.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0)
WRITE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
LAG_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
BATCH_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)

_MULTIPROC_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
if _MULTIPROC_DIR:
    # Metrics open their files at import; make sure the directory exists (serve creates it
    # too, but anything that imports this module first would fail).
    Path(_MULTIPROC_DIR).mkdir(parents=True, exist_ok=True)
REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)  # process_cpu_seconds_total, process_start_time_seconds, ...
PlatformCollector(registry=REGISTRY)


def _c(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
    return Counter(name, doc, labels, namespace=NAMESPACE, registry=REGISTRY)


def _g(name: str, doc: str, labels: tuple[str, ...] = (), mode: str = "livesum") -> Gauge:
    return Gauge(name, doc, labels, namespace=NAMESPACE, registry=REGISTRY, multiprocess_mode=mode)  # type: ignore[arg-type]


def _h(name: str, doc: str, labels: tuple[str, ...], buckets: tuple[float, ...]) -> Histogram:
    return Histogram(name, doc, labels, namespace=NAMESPACE, registry=REGISTRY, buckets=buckets)


# --- HTTP ---------------------------------------------------------------------------------
HTTP_REQUESTS = _c(
    "http_requests_total",
    "HTTP requests by method, route template and status.",
    ("method", "route", "status"),
)
HTTP_DURATION = _h(
    "http_request_duration_seconds",
    "HTTP request latency by route template.",
    ("method", "route"),
    LATENCY_BUCKETS,
)
HTTP_IN_FLIGHT = _g("http_requests_in_flight", "HTTP requests being served now.")

# --- authentication -------------------------------------------------------------------
AUTH_FAILURES = _c("auth_failures_total", "Failed authentications by kind.", ("kind",))
RATE_LIMITED = _c("rate_limited_total", "Requests refused by a rate limit.", ("limit",))
# Known label values start at 0, so rate() and alerts see the first failure as an increase.
for _kind in ("password", "mfa", "token", "refresh", "sso"):
    AUTH_FAILURES.labels(_kind)

# --- telemetry pipeline -----------------------------------------------------------------
INGEST_POINTS = _c(
    "ingest_points_total",
    "Positions received by protocol and outcome (accepted/rejected) and reason.",
    ("protocol", "outcome", "reason"),
)
INGEST_QUEUE_DEPTH = _g("ingest_queue_depth", "Positions waiting in the ingest queue.", mode="max")
INGEST_QUEUE_OLDEST = _g(
    "ingest_queue_oldest_age_seconds",
    "Age of the oldest position waiting in the queue.",
    mode="max",
)
INGEST_BATCH_SIZE = _h(
    "ingest_batch_size", "Positions written per database batch.", (), BATCH_BUCKETS
)
INGEST_WRITE = _h("ingest_write_duration_seconds", "Time to commit one batch.", (), WRITE_BUCKETS)
INGEST_LAG = _h("ingest_lag_seconds", "From receipt of a position to its commit.", (), LAG_BUCKETS)
WEBSOCKET_CLIENTS = _g("websocket_clients", "Live-feed WebSocket clients connected.")
LIVE_DROPPED = _c(
    "live_dropped_total",
    "Live-feed losses: slow_client (a client dropped for falling behind), publish_failed (a "
    "batch not published to Redis in time).",
    ("reason",),
)
for _reason in ("slow_client", "publish_failed"):
    LIVE_DROPPED.labels(_reason)
MQTT_CONNECTED = _g("mqtt_connected", "1 while the MQTT bridge is connected to the broker.")
MQTT_MESSAGES = _c(
    "mqtt_messages_total",
    "MQTT messages by outcome: accepted, rejected, deferred (left unacknowledged for a retry "
    "while the queue could not take them).",
    ("outcome",),
)

# --- jobs and notifications -------------------------------------------------------------
JOB_RUNS = _c(
    "job_runs_total",
    "Scheduled job runs by job and outcome (success/failure).",
    ("job_name", "outcome"),
)
JOB_DURATION = _h(
    "job_duration_seconds",
    "Scheduled job duration.",
    ("job_name",),
    (0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600),
)
NOTIFICATIONS = _c(
    "notification_deliveries_total",
    "Notification deliveries by channel and outcome.",
    ("channel", "outcome"),
)

# --- dependencies ---------------------------------------------------------------------
DB_POOL_IN_USE = _g("db_pool_connections_in_use", "Database connections checked out.")
DB_POOL_OVERFLOW = _g("db_pool_overflow", "Connections beyond the pool size in use.")
REDIS_ROUNDTRIP = _h(
    "redis_roundtrip_seconds",
    "Redis PING round trip.",
    (),
    (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5),
)

# --- business (computed at scrape time, cached) ----------------------------------------
VEHICLES = _g("vehicles", "Vehicles by status (all tenants).", ("status",), mode="max")
VEHICLES_REPORTING = _g(
    "vehicles_reporting", "Vehicles with a position in the last 5 minutes.", mode="max"
)
MAINTENANCE_OVERDUE = _g("maintenance_overdue_tasks", "Maintenance tasks past due.", mode="max")
WORK_ORDERS_OPEN = _g("work_orders_open", "Work orders not closed.", mode="max")
DEFECTS_CRITICAL_OPEN = _g("defects_critical_open", "Open critical inspection defects.", mode="max")

# --- operations -----------------------------------------------------------------------
# (Certificate expiry comes from `ctafleet ops certs check`: ctafleet.ops.certs.metrics.)
# A gauge rather than an Info metric: Info does not work in multiprocess mode.
BUILD_INFO = _g(
    "build_info",
    "Version and commit of the running code (always 1).",
    ("version", "commit", "process"),
    mode="max",
)


def set_build_info(process: str) -> None:
    commit = os.environ.get("CTAFLEET_COMMIT", "unknown")
    BUILD_INFO.labels(__version__, commit, process).set(1)


def render() -> tuple[bytes, str]:
    """The exposition of this process, or of all processes in multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        _multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def route_template(scope: Scope) -> str:
    """The matched route's full template (`/api/v1/vehicles/{vehicle_id}`), never the raw path.

    FastAPI keeps included routers nested: `scope["route"].path` lacks the include prefixes,
    so the effective route context, which carries the full template, is read first. A test
    pins this for the locked FastAPI version.
    """
    context = scope.get("fastapi", {}).get("effective_route_context")
    template = getattr(context, "path_format", None)
    if template:
        return str(template)
    route = scope.get("route")
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    if template:
        return str(template)
    return _plain_route(scope)


def _plain_route(scope: Scope) -> str:
    """Routes that are not FastAPI's (the OpenAPI schema, static files) leave no trace in the
    scope: find the one that matched (only on this rare path), else `unmatched`."""
    from starlette.routing import Match, Mount, Route

    app = scope.get("app")
    # A mount rewrites the scope's root path as it passes the request on: match a clean copy.
    probe = {"type": "http", "path": scope.get("path", ""), "root_path": "", "method": "GET"}
    for route in getattr(app, "routes", ()):
        if isinstance(route, Route | Mount) and route.matches(probe)[0] is Match.FULL:
            if isinstance(route, Mount):
                return f"{route.path}/{{path}}"
            return str(route.path_format)
    return "unmatched"


_observers: dict[tuple[str, str, str], Callable[[float], None]] = {}


def http_observer(method: str, route: str, status: int) -> Callable[[float], None]:
    """Counts one request and records its duration; the label children are looked up once
    per (method, route, status), not on every request."""
    key = (method, route, str(status))
    observer = _observers.get(key)
    if observer is None:
        counter = HTTP_REQUESTS.labels(*key)
        histogram = HTTP_DURATION.labels(method, route)

        def observer(seconds: float) -> None:
            counter.inc()
            histogram.observe(seconds)

        _observers[key] = observer
    return observer
