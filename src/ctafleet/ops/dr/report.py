"""Drill reports (JSON) and their Prometheus metrics (text format, for a textfile collector)."""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

REPORT_KIND = "ctafleet-dr-drill"

METRIC_RTO = "ctafleet_dr_drill_rto_seconds"
METRIC_RPO = "ctafleet_dr_drill_rpo_seconds"
METRIC_LAST_SUCCESS = "ctafleet_dr_drill_last_success_timestamp_seconds"
METRIC_SUCCESS = "ctafleet_dr_drill_success"
METRIC_NAMES = (METRIC_RTO, METRIC_RPO, METRIC_LAST_SUCCESS, METRIC_SUCCESS)


def default_dir() -> Path:
    """`<CTAFLEET_DATA_DIR>/dr`; settings that do not validate must not block a DR command."""
    try:
        from ctafleet.config import load_settings

        return load_settings().data_dir / "dr"
    except Exception:
        return Path(os.environ.get("CTAFLEET_DATA_DIR", "data")) / "dr"


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_report(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) and data.get("kind") == REPORT_KIND else None


def write_report(path: Path, report: dict[str, Any]) -> None:
    """Write the report; a failed drill keeps the time of the last successful one."""
    if not report.get("success"):
        previous = read_report(path)
        if previous and previous.get("last_success_at"):
            report["last_success_at"] = previous["last_success_at"]
    _atomic_write(path, json.dumps(report, indent=2, default=str) + "\n")


def write_metrics(path: Path, report: dict[str, Any]) -> None:
    """The four drill gauges, labelled by mode, written atomically (a collector that reads the
    file mid-write would otherwise see a truncated exposition)."""
    registry = CollectorRegistry()
    labels = ("mode",)
    mode = str(report.get("mode", "unknown"))
    success = Gauge(
        METRIC_SUCCESS,
        "1 if the last DR drill restored and verified, else 0.",
        labels,
        registry=registry,
    )
    success.labels(mode).set(1 if report.get("success") else 0)
    if report.get("rto_seconds") is not None:
        Gauge(
            METRIC_RTO,
            "Time the last DR drill took to a serving database.",
            labels,
            registry=registry,
        ).labels(mode).set(float(report["rto_seconds"]))
    if report.get("rpo_seconds") is not None:
        Gauge(
            METRIC_RPO,
            "Data the last DR drill lost relative to its source, in seconds.",
            labels,
            registry=registry,
        ).labels(mode).set(float(report["rpo_seconds"]))
    last = report.get("last_success_at")
    if last:
        stamp = dt.datetime.fromisoformat(str(last)).timestamp()
        Gauge(
            METRIC_LAST_SUCCESS,
            "Unix time of the last successful DR drill.",
            labels,
            registry=registry,
        ).labels(mode).set(stamp)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(path), registry)
    os.chmod(path, 0o644)
