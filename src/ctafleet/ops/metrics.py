"""The metrics of the operations commands: one name, type and help text for each.

`ctafleet backup` and `ctafleet dr drill` are short-lived processes that no Prometheus
scrapes; they publish these to a node-exporter textfile and, for backups, a Pushgateway. The
long-running processes (api, worker) do not expose them: a gauge at 0 there would hide the
absence that CTAFleetBackupMetricsMissing alerts on.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

__all__ = ["Metric"]
from prometheus_client.registry import Collector


@dataclass(frozen=True)
class MetricDef:
    name: str  # as exposed: a counter's ends in _total
    kind: str  # "gauge" or "counter"
    help: str
    labels: tuple[str, ...] = ()

    def family(self, samples: Iterable[tuple[Sequence[str], float]]) -> Metric:
        """A metric family holding `samples` (label values, value)."""
        family: Metric
        if self.kind == "counter":
            family = CounterMetricFamily(
                self.name.removesuffix("_total"), self.help, labels=self.labels
            )
        else:
            family = GaugeMetricFamily(self.name, self.help, labels=self.labels)
        for label_values, value in samples:
            family.add_metric(list(label_values), value)
        return family


# --- `ctafleet backup` (job ctafleet-backup on the Pushgateway) ------------------------------
BACKUP_LAST_SUCCESS = MetricDef(
    "ctafleet_backup_last_success_timestamp_seconds",
    "gauge",
    "Unix time of the last successful backup.",
)
BACKUP_LAST_SIZE = MetricDef(
    "ctafleet_backup_last_size_bytes",
    "gauge",
    "Size of the last successful backup as stored (compressed and encrypted), in bytes.",
)
BACKUP_LAST_DURATION = MetricDef(
    "ctafleet_backup_last_duration_seconds",
    "gauge",
    "Duration of the last successful backup.",
)
BACKUP_FAILURES = MetricDef("ctafleet_backup_failures_total", "counter", "Failed backup runs.")
BACKUP_VERIFY_LAST_SUCCESS = MetricDef(
    "ctafleet_backup_verify_last_success_timestamp_seconds",
    "gauge",
    "Unix time of the last successful restore test (backup verify).",
)
BACKUP_VERIFY_FAILURES = MetricDef(
    "ctafleet_backup_verify_failures_total", "counter", "Failed restore tests (backup verify)."
)
BACKUP_METRICS = (
    BACKUP_LAST_SUCCESS,
    BACKUP_LAST_SIZE,
    BACKUP_LAST_DURATION,
    BACKUP_FAILURES,
    BACKUP_VERIFY_LAST_SUCCESS,
    BACKUP_VERIFY_FAILURES,
)

# --- `ctafleet dr drill`, labelled by mode (physical, logical) ----------------------------------
DRILL_RTO = MetricDef(
    "ctafleet_dr_drill_rto_seconds",
    "gauge",
    "Time the last DR drill took from the start of its restore to a database that commits.",
    ("mode",),
)
DRILL_RPO = MetricDef(
    "ctafleet_dr_drill_rpo_seconds",
    "gauge",
    "Committed data the last DR drill's restore lacked relative to its source, in seconds.",
    ("mode",),
)
DRILL_LAST_SUCCESS = MetricDef(
    "ctafleet_dr_drill_last_success_timestamp_seconds",
    "gauge",
    "Unix time of the last DR drill that passed.",
    ("mode",),
)
DRILL_SUCCESS = MetricDef(
    "ctafleet_dr_drill_success",
    "gauge",
    "1 if the last DR drill passed (restored, verified, RTO and RPO targets met), else 0.",
    ("mode",),
)
DRILL_METRICS = (DRILL_RTO, DRILL_RPO, DRILL_LAST_SUCCESS, DRILL_SUCCESS)

ALL = BACKUP_METRICS + DRILL_METRICS
BY_NAME: dict[str, MetricDef] = {m.name: m for m in ALL}


class Families(Collector):
    """A collector of ready-made families (for a registry of one command's output)."""

    def __init__(self, families: Sequence[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        yield from self.families


def registry(families: Sequence[Metric]) -> CollectorRegistry:
    out = CollectorRegistry(auto_describe=False)
    out.register(Families(families))
    return out


def render(families: Sequence[Metric]) -> bytes:
    return generate_latest(registry(families))


def write_textfile(path: Path, families: Sequence[Metric]) -> None:
    """Replace `path` atomically: the textfile collector may read it at any moment and must
    see the old exposition or the new one, never half of one."""
    data = render(families)
    path.parent.mkdir(parents=True, exist_ok=True)
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


def unlabelled(values: Mapping[str, float], definitions: Iterable[MetricDef]) -> list[Metric]:
    """One family per definition that has a value."""
    return [d.family([((), values[d.name])]) for d in definitions if d.name in values]
