"""One definition of the backup and drill metrics (ctafleet.ops.metrics), used by what the
commands publish; the long-running processes' registry does not carry them."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from ctafleet.observability import metrics as app_metrics
from ctafleet.ops import metrics as m
from ctafleet.ops.backup.metrics import BackupMetrics
from ctafleet.ops.dr.report import write_metrics


def _families(text: str) -> dict[str, tuple[str, str]]:
    return {f.name: (f.type, f.documentation) for f in text_string_to_metric_families(text)}


def test_the_api_registry_does_not_expose_backup_or_drill_metrics() -> None:
    """Exposed at 0 by the api, CTAFleetBackupMetricsMissing (absent(...)) could never fire."""
    exposed = {
        sample.name
        for family in text_string_to_metric_families(app_metrics.render()[0].decode())
        for sample in family.samples
    }
    families = {f.name for f in app_metrics.REGISTRY.collect()}
    for definition in m.ALL:
        assert definition.name not in exposed
        assert definition.name.removesuffix("_total") not in families


def test_published_names_types_and_help_are_the_definitions(tmp_path: Path) -> None:
    backup = BackupMetrics(tmp_path / "backup.prom", None)
    backup.backup_succeeded(finished=1.0, size=2, duration=3.0)
    backup.backup_failed()
    backup.verify_succeeded(finished=4.0)
    backup.verify_failed()
    assert backup.publish() == []
    drill = tmp_path / "drill.prom"
    write_metrics(
        drill,
        {
            "mode": "logical",
            "success": True,
            "rto_seconds": 1.5,
            "rpo_seconds": 0.0,
            "last_success_at": "2026-03-01T00:00:00+00:00",
        },
    )
    published = _families((tmp_path / "backup.prom").read_text()) | _families(drill.read_text())
    expected = {d.name.removesuffix("_total"): (d.kind, d.help) for d in m.ALL}
    assert published == expected
    samples = {
        s.name: (s.labels, s.value)
        for f in text_string_to_metric_families(drill.read_text())
        for s in f.samples
    }
    assert samples["ctafleet_dr_drill_success"] == ({"mode": "logical"}, 1.0)
    assert samples["ctafleet_dr_drill_last_success_timestamp_seconds"][1] == 1772323200.0
