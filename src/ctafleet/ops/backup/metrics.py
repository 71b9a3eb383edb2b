"""Metrics of the backup commands, for the "backup stale/failed" alerts.

A backup run is a short-lived process that no Prometheus scrapes, so besides setting the
process-wide gauges (for a worker that runs backups in-process), each run publishes:

- to a text file for node-exporter's textfile collector (`--metrics-file`,
  CTAFLEET_BACKUP__METRICS_FILE; the name must end in `.prom`), replaced atomically;
- to a Pushgateway (CTAFLEET_BACKUP__PUSHGATEWAY_URL), job `ctafleet-backup`.

Each run starts from the values already published (the file, else the Pushgateway), so a
failed run keeps the last success time and the failure counter only ever grows.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import urllib.request
from collections.abc import Iterable, Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest, push_to_gateway
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from ctafleet.observability.metrics import BACKUP_FAILURES, BACKUP_LAST_SIZE, BACKUP_LAST_SUCCESS

JOB = "ctafleet-backup"
# name -> (type, help); names match the process-wide metrics where those exist.
METRICS: dict[str, tuple[str, str]] = {
    "ctafleet_backup_last_success_timestamp_seconds": (
        "gauge",
        "Unix time of the last successful backup.",
    ),
    "ctafleet_backup_last_size_bytes": ("gauge", "Size of the last successful backup."),
    "ctafleet_backup_last_duration_seconds": (
        "gauge",
        "Duration of the last successful backup.",
    ),
    "ctafleet_backup_failures_total": ("counter", "Failed backup runs."),
    "ctafleet_backup_verify_last_success_timestamp_seconds": (
        "gauge",
        "Unix time of the last successful backup verification (restore test).",
    ),
    "ctafleet_backup_verify_failures_total": ("counter", "Failed backup verifications."),
}


class _Values(Collector):
    def __init__(self, values: dict[str, float]) -> None:
        self.values = values

    def collect(self) -> Iterator[Metric]:
        for name, (kind, doc) in METRICS.items():
            if name not in self.values:
                continue
            if kind == "counter":
                family: Metric = CounterMetricFamily(name.removesuffix("_total"), doc)
            else:
                family = GaugeMetricFamily(name, doc)
            family.add_metric([], self.values[name])  # type: ignore[attr-defined]
            yield family


def _parse(text: str, job: str | None = None) -> dict[str, float]:
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in METRICS and (job is None or sample.labels.get("job") == job):
                values[sample.name] = float(sample.value)
    return values


class BackupMetrics:
    def __init__(self, metrics_file: str | Path | None, pushgateway_url: str | None) -> None:
        self.metrics_file = Path(metrics_file) if metrics_file else None
        self.pushgateway_url = (pushgateway_url or "").rstrip("/") or None
        self.warnings: list[str] = []
        self.values = self._load()

    def _load(self) -> dict[str, float]:
        if self.metrics_file is not None:
            with contextlib.suppress(OSError, ValueError):
                return _parse(self.metrics_file.read_text())
            return {}
        if self.pushgateway_url is not None:
            try:
                with urllib.request.urlopen(  # noqa: S310 - operator-configured http(s) URL
                    f"{self.pushgateway_url}/metrics", timeout=10
                ) as response:
                    return _parse(response.read().decode(), job=JOB)
            except (OSError, ValueError) as exc:
                self.warnings.append(f"could not read the Pushgateway's current values: {exc}")
        return {}

    def backup_succeeded(self, *, finished: float, size: int, duration: float) -> None:
        self.values["ctafleet_backup_last_success_timestamp_seconds"] = finished
        self.values["ctafleet_backup_last_size_bytes"] = float(size)
        self.values["ctafleet_backup_last_duration_seconds"] = duration
        self.values.setdefault("ctafleet_backup_failures_total", 0.0)
        BACKUP_LAST_SUCCESS.set(finished)
        BACKUP_LAST_SIZE.set(size)

    def backup_failed(self) -> None:
        self.values["ctafleet_backup_failures_total"] = (
            self.values.get("ctafleet_backup_failures_total", 0.0) + 1
        )
        BACKUP_FAILURES.inc()

    def verify_succeeded(self, *, finished: float) -> None:
        self.values["ctafleet_backup_verify_last_success_timestamp_seconds"] = finished
        self.values.setdefault("ctafleet_backup_verify_failures_total", 0.0)

    def verify_failed(self) -> None:
        self.values["ctafleet_backup_verify_failures_total"] = (
            self.values.get("ctafleet_backup_verify_failures_total", 0.0) + 1
        )

    def render(self) -> bytes:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Values(self.values))
        return generate_latest(registry)

    def publish(self) -> list[str]:
        """Write the file and push; problems come back as warnings, never as errors (the
        backup's own outcome must not be masked by its metrics)."""
        if self.metrics_file is not None:
            try:
                self._write_file(self.metrics_file, self.render())
            except OSError as exc:
                self.warnings.append(f"could not write {self.metrics_file}: {exc.strerror}")
        if self.pushgateway_url is not None:
            registry = CollectorRegistry(auto_describe=False)
            registry.register(_Values(self.values))
            try:
                push_to_gateway(self.pushgateway_url, job=JOB, registry=registry, timeout=10)
            except OSError as exc:
                self.warnings.append(f"could not push to the Pushgateway: {exc}")
        return self.warnings

    @staticmethod
    def _write_file(path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # The collector may read at any moment: it must see the old file or the new one.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


def names() -> Iterable[str]:
    return METRICS.keys()
