"""Drill reports (JSON) and their Prometheus metrics (text format, for a textfile collector)."""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from ctafleet.ops import metrics as m

REPORT_KIND = "ctafleet-dr-drill"
METRIC_NAMES = tuple(d.name for d in m.DRILL_METRICS)


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
    """The drill gauges, labelled by mode, written atomically. `success` is the drill's
    verdict: the same one it prints and exits with."""
    mode = (str(report.get("mode", "unknown")),)
    families = [m.DRILL_SUCCESS.family([(mode, 1.0 if report.get("success") else 0.0)])]
    if report.get("rto_seconds") is not None:
        families.append(m.DRILL_RTO.family([(mode, float(report["rto_seconds"]))]))
    if report.get("rpo_seconds") is not None:
        families.append(m.DRILL_RPO.family([(mode, float(report["rpo_seconds"]))]))
    last = report.get("last_success_at")
    if last:
        stamp = dt.datetime.fromisoformat(str(last)).timestamp()
        families.append(m.DRILL_LAST_SUCCESS.family([(mode, stamp)]))
    m.write_textfile(path, families)
