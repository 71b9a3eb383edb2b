"""Writes the Grafana dashboards (JSON) from the definitions below.

    .venv/bin/python deploy/monitoring/grafana/generate.py

A test fails when the committed JSON differs from this output, and the live-Prometheus test
runs every panel query. Every panel has a title and a description.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OUT = Path(__file__).parent / "dashboards"
DATASOURCE = {"type": "prometheus", "uid": "prometheus"}


@dataclass
class Panel:
    title: str
    description: str
    exprs: list[tuple[str, str]]  # (PromQL, legend)
    unit: str = "short"
    kind: str = "timeseries"  # or "stat"
    width: int = 12


@dataclass
class Dashboard:
    uid: str
    title: str
    description: str
    panels: list[Panel] = field(default_factory=list)


def _panel(p: Panel, pid: int, x: int, y: int) -> dict[str, Any]:
    return {
        "id": pid,
        "type": p.kind,
        "title": p.title,
        "description": p.description,
        "datasource": DATASOURCE,
        "gridPos": {"x": x, "y": y, "w": p.width, "h": 4 if p.kind == "stat" else 8},
        "fieldConfig": {"defaults": {"unit": p.unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}}
        if p.kind == "timeseries"
        else {"reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "value"},
        "targets": [
            {
                "refId": chr(ord("A") + i),
                "expr": expr,
                "legendFormat": legend,
                "datasource": DATASOURCE,
            }
            for i, (expr, legend) in enumerate(p.exprs)
        ],
    }


def render(d: Dashboard) -> dict[str, Any]:
    panels, x, y, row_h = [], 0, 0, 0
    for i, p in enumerate(d.panels, start=1):
        h = 4 if p.kind == "stat" else 8
        if x + p.width > 24:
            x, y, row_h = 0, y + row_h, 0
        panels.append(_panel(p, i, x, y))
        x += p.width
        row_h = max(row_h, h)
    return {
        "uid": d.uid,
        "title": d.title,
        "description": d.description,
        "tags": ["ctafleet"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": False,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": []},
        "panels": panels,
    }


API = 'job="ctafleet-api"'
RATE = "[5m]"

DASHBOARDS = [
    Dashboard(
        "ctafleet-fleet",
        "CTAFleet / Fleet overview",
        "What the fleet is doing: vehicles by status, vehicles reporting, maintenance and "
        "defects, live feed.",
        [
            Panel(
                "Active vehicles",
                "Vehicles with status active (all tenants).",
                [('max(ctafleet_vehicles{status="active"})', "active")],
                kind="stat",
                width=6,
            ),
            Panel(
                "Vehicles reporting (5 min)",
                "Vehicles whose device sent a position in the last 5 minutes.",
                [("max(ctafleet_vehicles_reporting)", "reporting")],
                kind="stat",
                width=6,
            ),
            Panel(
                "Overdue maintenance tasks",
                "Maintenance tasks past their due date or meter.",
                [("max(ctafleet_maintenance_overdue_tasks)", "overdue")],
                kind="stat",
                width=6,
            ),
            Panel(
                "Open critical defects",
                "Inspection defects marked critical and not repaired.",
                [("max(ctafleet_defects_critical_open)", "critical")],
                kind="stat",
                width=6,
            ),
            Panel(
                "Vehicles by status",
                "Count of vehicles per status over time.",
                [("max by (status) (ctafleet_vehicles)", "{{status}}")],
            ),
            Panel(
                "Open work orders",
                "Work orders not yet closed.",
                [("max(ctafleet_work_orders_open)", "open")],
            ),
            Panel(
                "Positions accepted per second",
                "Accepted positions by protocol.",
                [
                    (
                        'sum by (protocol) (rate(ctafleet_ingest_points_total{outcome="accepted"}'
                        + RATE
                        + "))",
                        "{{protocol}}",
                    )
                ],
                unit="ops",
            ),
            Panel(
                "Live-feed clients",
                "WebSocket clients connected to the live map.",
                [("sum(ctafleet_websocket_clients)", "clients")],
            ),
        ],
    ),
    Dashboard(
        "ctafleet-api",
        "CTAFleet / API (RED and SLO)",
        "Rate, errors and duration of the API, and the burn of the availability (99.9 % "
        "non-5xx) and latency (99 % under 300 ms) SLOs.",
        [
            Panel(
                "Requests per second",
                "All API requests per second.",
                [(f"sum(rate(ctafleet_http_requests_total{{{API}}}{RATE}))", "requests")],
                unit="reqps",
                kind="stat",
                width=6,
            ),
            Panel(
                "5xx ratio",
                "Share of API requests answered with a server error (5 min).",
                [
                    (
                        # `or vector(0)`: no 5xx series yet is a ratio of 0, not "no data".
                        f'(sum(rate(ctafleet_http_requests_total{{{API},status=~"5.."}}{RATE})) '
                        f"or vector(0)) / sum(rate(ctafleet_http_requests_total{{{API}}}{RATE}))",
                        "5xx",
                    )
                ],
                unit="percentunit",
                kind="stat",
                width=6,
            ),
            Panel(
                "p95 latency",
                "95th percentile of request duration (5 min).",
                [
                    (
                        "histogram_quantile(0.95, sum by (le) (rate("
                        f"ctafleet_http_request_duration_seconds_bucket{{{API}}}{RATE})))",
                        "p95",
                    )
                ],
                unit="s",
                kind="stat",
                width=6,
            ),
            Panel(
                "In flight",
                "Requests being served right now.",
                [(f"sum(ctafleet_http_requests_in_flight{{{API}}})", "in flight")],
                kind="stat",
                width=6,
            ),
            Panel(
                "Requests by route",
                "Requests per second by route template and status class.",
                [
                    (
                        f"sum by (route) (rate(ctafleet_http_requests_total{{{API}}}{RATE}))",
                        "{{route}}",
                    )
                ],
                unit="reqps",
            ),
            Panel(
                "Errors by route",
                "4xx and 5xx per second by route template.",
                [
                    (
                        f"sum by (route, status) (rate(ctafleet_http_requests_total{{{API},"
                        f'status=~"[45].."}}{RATE}))',
                        "{{route}} {{status}}",
                    )
                ],
                unit="reqps",
            ),
            Panel(
                "Latency percentiles",
                "p50, p95 and p99 of request duration.",
                [
                    (
                        f"histogram_quantile({q}, sum by (le) (rate("
                        f"ctafleet_http_request_duration_seconds_bucket{{{API}}}{RATE})))",
                        f"p{p}",
                    )
                    for q, p in (("0.5", 50), ("0.95", 95), ("0.99", 99))
                ],
                unit="s",
            ),
            Panel(
                "Slowest routes (p95)",
                "95th percentile latency per route template.",
                [
                    (
                        "topk(10, histogram_quantile(0.95, sum by (le, route) (rate("
                        f"ctafleet_http_request_duration_seconds_bucket{{{API}}}{RATE}))))",
                        "{{route}}",
                    )
                ],
                unit="s",
            ),
            Panel(
                "Availability SLO burn rate",
                "Error ratio divided by the error budget (0.1 %): 1 spends the budget exactly in "
                "30 days; the pager fires at 14.4 (1 h) and 6 (6 h).",
                [
                    (f"ctafleet:sli_availability_errors:ratio_rate{w} / 0.001", w)
                    for w in ("5m", "1h", "6h", "3d")
                ],
            ),
            Panel(
                "Latency SLO burn rate",
                "Share of requests slower than 300 ms divided by the budget (1 %).",
                [
                    (f"ctafleet:sli_latency_slow:ratio_rate{w} / 0.01", w)
                    for w in ("5m", "1h", "6h", "3d")
                ],
            ),
            Panel(
                "Rate-limited requests",
                "Requests refused with 429 by limit.",
                [(f"sum by (limit) (rate(ctafleet_rate_limited_total{RATE}))", "{{limit}}")],
                unit="reqps",
            ),
            Panel(
                "Authentication failures",
                "Failed logins and rejected tokens per second.",
                [(f"sum by (kind) (rate(ctafleet_auth_failures_total{RATE}))", "{{kind}}")],
                unit="ops",
            ),
        ],
    ),
    Dashboard(
        "ctafleet-ingest",
        "CTAFleet / Ingest pipeline",
        "Positions from devices to the database: intake, queue, batches, lag.",
        [
            Panel(
                "Positions received by outcome",
                "Per second, by protocol and outcome.",
                [
                    (
                        f"sum by (protocol, outcome) (rate(ctafleet_ingest_points_total{RATE}))",
                        "{{protocol}} {{outcome}}",
                    )
                ],
                unit="ops",
            ),
            Panel(
                "Rejections by reason",
                "Rejected positions per second by reason.",
                [
                    (
                        'sum by (reason) (rate(ctafleet_ingest_points_total{outcome="rejected"}'
                        + RATE
                        + "))",
                        "{{reason}}",
                    )
                ],
                unit="ops",
            ),
            Panel(
                "Queue depth",
                "Positions waiting to be written.",
                [("max(ctafleet_ingest_queue_depth)", "depth")],
            ),
            Panel(
                "Oldest queued position",
                "Age of the oldest waiting position.",
                [("max(ctafleet_ingest_queue_oldest_age_seconds)", "age")],
                unit="s",
            ),
            Panel(
                "Batch size",
                "Median and p95 positions per batch write.",
                [
                    (
                        f"histogram_quantile({q}, sum by (le) (rate(ctafleet_ingest_batch_size_bucket"
                        f"{RATE})))",
                        f"p{p}",
                    )
                    for q, p in (("0.5", 50), ("0.95", 95))
                ],
            ),
            Panel(
                "Batch write latency",
                "p95 time to commit one batch.",
                [
                    (
                        "histogram_quantile(0.95, sum by (le) (rate("
                        f"ctafleet_ingest_write_duration_seconds_bucket{RATE})))",
                        "p95",
                    )
                ],
                unit="s",
            ),
            Panel(
                "Ingest-to-commit lag",
                "p50 and p95 from receipt to commit.",
                [
                    (
                        f"histogram_quantile({q}, sum by (le) (rate(ctafleet_ingest_lag_seconds_bucket"
                        f"{RATE})))",
                        f"p{p}",
                    )
                    for q, p in (("0.5", 50), ("0.95", 95))
                ],
                unit="s",
            ),
            Panel(
                "Live-feed clients",
                "WebSocket clients per process.",
                [("sum by (instance) (ctafleet_websocket_clients)", "{{instance}}")],
            ),
        ],
    ),
    Dashboard(
        "ctafleet-datastores",
        "CTAFleet / Database and Redis",
        "PostgreSQL and Redis health as seen by their exporters and by the application.",
        [
            Panel(
                "PostgreSQL up",
                "1 when the exporter reaches PostgreSQL.",
                [("min(pg_up)", "up")],
                kind="stat",
                width=6,
            ),
            Panel(
                "Redis up",
                "1 when the exporter reaches Redis.",
                [("min(redis_up)", "up")],
                kind="stat",
                width=6,
            ),
            Panel(
                "Connections used",
                "Share of max_connections in use.",
                [("sum(pg_stat_activity_count) / max(pg_settings_max_connections)", "used")],
                unit="percentunit",
                kind="stat",
                width=6,
            ),
            Panel(
                "Replication lag",
                "Seconds the standby is behind.",
                [("max(pg_replication_lag_seconds)", "lag")],
                unit="s",
                kind="stat",
                width=6,
            ),
            Panel(
                "Application pool",
                "Connections checked out of each process's pool, and overflow.",
                [
                    ("sum(ctafleet_db_pool_connections_in_use)", "in use"),
                    ("sum(ctafleet_db_pool_overflow)", "overflow"),
                ],
            ),
            Panel(
                "Deadlocks",
                "Deadlocks per second by database.",
                [(f"sum by (datname) (rate(pg_stat_database_deadlocks{RATE}))", "{{datname}}")],
                unit="ops",
            ),
            Panel(
                "Redis memory",
                "Used memory against maxmemory.",
                [("max(redis_memory_used_bytes)", "used"), ("max(redis_memory_max_bytes)", "max")],
                unit="bytes",
            ),
            Panel(
                "Redis round trip",
                "p95 of the application's Redis PING.",
                [
                    (
                        "histogram_quantile(0.95, sum by (le) (rate("
                        f"ctafleet_redis_roundtrip_seconds_bucket{RATE})))",
                        "p95",
                    )
                ],
                unit="s",
            ),
            Panel(
                "Redis rejected connections",
                "Connections refused by Redis (maxclients).",
                [(f"sum(rate(redis_rejected_connections_total{RATE}))", "rejected")],
                unit="ops",
            ),
        ],
    ),
    Dashboard(
        "ctafleet-infrastructure",
        "CTAFleet / Infrastructure",
        "Hosts, Kubernetes workloads, jobs, backups and certificates.",
        [
            Panel(
                "Last backup age",
                "Time since the last successful logical backup.",
                [("time() - max(ctafleet_backup_last_success_timestamp_seconds)", "age")],
                unit="s",
                kind="stat",
                width=6,
            ),
            Panel(
                "Last backup size",
                "Size of the last successful backup.",
                [("max(ctafleet_backup_last_size_bytes)", "size")],
                unit="bytes",
                kind="stat",
                width=6,
            ),
            Panel(
                "Certificate expiry",
                "Days until the served certificate expires.",
                [
                    (
                        "min(ctafleet_tls_certificate_expiry_timestamp_seconds - time()) / 86400",
                        "days",
                    )
                ],
                unit="d",
                kind="stat",
                width=6,
            ),
            Panel(
                "Processes up",
                "Scraped CTAFleet processes that answer.",
                [('sum by (job) (up{job=~"ctafleet-.*"})', "{{job}}")],
                kind="stat",
                width=6,
            ),
            Panel(
                "CPU busy",
                "Share of CPU not idle per host.",
                [
                    (
                        '1 - avg by (instance) (rate(node_cpu_seconds_total{mode="idle"}'
                        + RATE
                        + "))",
                        "{{instance}}",
                    )
                ],
                unit="percentunit",
            ),
            Panel(
                "Memory available",
                "Available memory share per host.",
                [("node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes", "{{instance}}")],
                unit="percentunit",
            ),
            Panel(
                "Disk free",
                "Free space share per filesystem.",
                [
                    (
                        'node_filesystem_avail_bytes{fstype!~"tmpfs|overlay"} / '
                        'node_filesystem_size_bytes{fstype!~"tmpfs|overlay"}',
                        "{{instance}} {{mountpoint}}",
                    )
                ],
                unit="percentunit",
            ),
            Panel(
                "OOM kills",
                "Processes killed by the kernel for memory.",
                [("increase(node_vmstat_oom_kill[1h])", "{{instance}}")],
            ),
            Panel(
                "Container restarts",
                "Restarts per pod in the last hour.",
                [
                    (
                        "sum by (namespace, pod) (increase("
                        "kube_pod_container_status_restarts_total[1h]))",
                        "{{pod}}",
                    )
                ],
            ),
            Panel(
                "HPA replicas",
                "Current against maximum replicas per autoscaler.",
                [
                    (
                        "kube_horizontalpodautoscaler_status_current_replicas",
                        "{{horizontalpodautoscaler}}",
                    ),
                    (
                        "kube_horizontalpodautoscaler_spec_max_replicas",
                        "max {{horizontalpodautoscaler}}",
                    ),
                ],
            ),
            Panel(
                "Volume usage",
                "Used share of each persistent volume claim.",
                [
                    (
                        "1 - kubelet_volume_stats_available_bytes / kubelet_volume_stats_capacity_bytes",
                        "{{persistentvolumeclaim}}",
                    )
                ],
                unit="percentunit",
            ),
            Panel(
                "Scheduled jobs",
                "Job runs per hour by job and outcome.",
                [
                    (
                        "sum by (job_name, outcome) (increase(ctafleet_job_runs_total[1h]))",
                        "{{job_name}} {{outcome}}",
                    )
                ],
            ),
            Panel(
                "Notification deliveries",
                "Deliveries per hour by channel and outcome.",
                [
                    (
                        "sum by (channel, outcome) (increase(ctafleet_notification_deliveries_total[1h]))",
                        "{{channel}} {{outcome}}",
                    )
                ],
            ),
        ],
    ),
]


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for d in DASHBOARDS:
        path = OUT / f"{d.uid.removeprefix('ctafleet-')}.json"
        path.write_text(json.dumps(render(d), indent=2, sort_keys=True) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
