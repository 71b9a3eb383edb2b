"""Metrics of the backup commands, for the "backup stale/failed" alerts.

A backup run is a short-lived process that no Prometheus scrapes, so each run publishes the
metrics of `ctafleet.ops.metrics` (their one definition):

- to a text file for node-exporter's textfile collector (`--metrics-file`,
  CTAFLEET_BACKUP__METRICS_FILE; the name must end in `.prom`), replaced atomically;
- to a Pushgateway (CTAFLEET_BACKUP__PUSHGATEWAY_URL), job `ctafleet-backup`.

Each run starts from the values already published (the file, else the Pushgateway), so a
failed run keeps the last success time and the failure counter only ever grows.
"""

from __future__ import annotations

import contextlib
import urllib.request
from pathlib import Path

from prometheus_client import push_to_gateway
from prometheus_client.parser import text_string_to_metric_families

from ctafleet.ops import metrics as m

JOB = "ctafleet-backup"
NAMES = frozenset(d.name for d in m.BACKUP_METRICS)


def _parse(text: str, job: str | None = None) -> dict[str, float]:
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in NAMES and (job is None or sample.labels.get("job") == job):
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
        self.values[m.BACKUP_LAST_SUCCESS.name] = finished
        self.values[m.BACKUP_LAST_SIZE.name] = float(size)
        self.values[m.BACKUP_LAST_DURATION.name] = duration
        self.values.setdefault(m.BACKUP_FAILURES.name, 0.0)

    def backup_failed(self) -> None:
        self.values[m.BACKUP_FAILURES.name] = self.values.get(m.BACKUP_FAILURES.name, 0.0) + 1

    def verify_succeeded(self, *, finished: float) -> None:
        self.values[m.BACKUP_VERIFY_LAST_SUCCESS.name] = finished
        self.values.setdefault(m.BACKUP_VERIFY_FAILURES.name, 0.0)

    def verify_failed(self) -> None:
        self.values[m.BACKUP_VERIFY_FAILURES.name] = (
            self.values.get(m.BACKUP_VERIFY_FAILURES.name, 0.0) + 1
        )

    def families(self) -> list[m.Metric]:
        return m.unlabelled(self.values, m.BACKUP_METRICS)

    def render(self) -> bytes:
        return m.render(self.families())

    def publish(self) -> list[str]:
        """Write the file and push; problems come back as warnings, never as errors (the
        backup's own outcome must not be masked by its metrics)."""
        if self.metrics_file is not None:
            try:
                m.write_textfile(self.metrics_file, self.families())
            except OSError as exc:
                self.warnings.append(f"could not write {self.metrics_file}: {exc.strerror}")
        if self.pushgateway_url is not None:
            registry = m.registry(self.families())
            try:
                push_to_gateway(self.pushgateway_url, job=JOB, registry=registry, timeout=10)
            except OSError as exc:
                self.warnings.append(f"could not push to the Pushgateway: {exc}")
        return self.warnings
