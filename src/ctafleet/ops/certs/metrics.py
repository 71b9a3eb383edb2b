"""The metrics of `ctafleet ops certs check`, written to a node-exporter textfile.

A check is a short-lived process that no Prometheus scrapes, so, like the backup commands, it
replaces a `*.prom` file atomically for node-exporter's textfile collector. The file holds
the hosts of the latest run. A host whose check failed keeps the expiry last read for it
(the certificate did not change because it could not be reached: the alert must still fire
on time) and reports `ctafleet_tls_certificate_check_success 0`; the other hosts get their
new values whatever happened to that one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from ctafleet.ops import metrics as m

# The series the CTAFleetTLSCertificateExpiring alert reads.
EXPIRY = m.MetricDef(
    "ctafleet_tls_certificate_expiry_timestamp_seconds",
    "gauge",
    "Unix time the served certificate expires.",
    ("host",),
)
CHECK_SUCCESS = m.MetricDef(
    "ctafleet_tls_certificate_check_success",
    "gauge",
    "1 if the last `ctafleet ops certs check` read the host's certificate, else 0 (its expiry "
    "is then the one read before).",
    ("host",),
)

CERTS_METRICS = (EXPIRY, CHECK_SUCCESS)


def previous_expiry(path: Path) -> dict[str, float]:
    """host -> expiry, from the file as the last run left it (nothing when unreadable)."""
    values: dict[str, float] = {}
    with contextlib.suppress(OSError, ValueError):
        for family in text_string_to_metric_families(path.read_text()):
            for sample in family.samples:
                if sample.name == EXPIRY.name and "host" in sample.labels:
                    values[sample.labels["host"]] = float(sample.value)
    return values


def write(path: Path, hosts: Sequence[str], read: dict[str, float]) -> None:
    """The file for this run's `hosts`, `read` holding the expiry of those checked."""
    before = previous_expiry(path)
    expiry = [
        ((h,), read[h] if h in read else before[h]) for h in hosts if h in read or h in before
    ]
    success = [((h,), 1.0 if h in read else 0.0) for h in hosts]
    m.write_textfile(path, [EXPIRY.family(expiry), CHECK_SUCCESS.family(success)])
