"""Metrics and notifications of the backup commands, against real receivers on loopback: an
HTTP server for the webhook, aiosmtpd for e-mail (tests/ops/conftest.py), Prometheus'
Pushgateway, and the text file node-exporter would read."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ctafleet.observability.metrics import REGISTRY
from tests.conftest import service_unavailable
from tests.kit.net import free_port
from tests.ops.backup.conftest import AgeKey, local_cli, stop, wait_listening
from tests.ops.conftest import Mailbox, Webhook


@pytest.fixture
def pushgateway(tmp_path: Path) -> Iterator[str]:
    binary = shutil.which("prometheus-pushgateway") or shutil.which("pushgateway")
    if binary is None:
        service_unavailable("prometheus-pushgateway is not installed (install-backup-tools.sh)")
    port = free_port()
    process = subprocess.Popen(
        # Debian's build persists to /var/lib by default: each test's gateway stays in memory.
        [binary, f"--web.listen-address=127.0.0.1:{port}", "--persistence.file="],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_listening(port, process)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(process)


def samples(text: str, job: str | None = None) -> dict[str, float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if job is None or sample.labels.get("job") == job:
                out[sample.name] = sample.value
    return out


# --- the commands -------------------------------------------------------------------------


def test_failed_backup_notifies_and_counts(
    webhook: Webhook, mailbox: Mailbox, age_key: AgeKey, tmp_path: Path
) -> None:
    missing = tmp_path / "no-such.db"
    metrics_file = tmp_path / "textfile" / "ctafleet_backup.prom"
    cli = local_cli(tmp_path, age_key, f"sqlite:///{missing}")
    cli.env.update(
        {
            "CTAFLEET_BACKUP__NOTIFY_WEBHOOK_URL": webhook.url,
            "CTAFLEET_BACKUP__NOTIFY_EMAIL": '["ops@fleet.example.org"]',
            "CTAFLEET_NOTIFICATIONS__SMTP_URL": mailbox.url,
            "CTAFLEET_BACKUP__METRICS_FILE": str(metrics_file),
        }
    )
    result = cli("create")
    assert result.exit_code == 1
    assert f"SQLite database {missing} does not exist" in result.stderr

    [call] = webhook.received
    body = call["body"]
    assert body["event"] == "ctafleet.backup.create.failed"
    assert body["outcome"] == "failed"
    assert "does not exist" in body["error"]
    [(recipients, message)] = mailbox.messages
    assert recipients == ["ops@fleet.example.org"]
    assert message["Subject"].startswith("[CTAFleet] backup create failed on ")
    assert "does not exist" in message.get_payload()

    values = samples(metrics_file.read_text())
    assert values["ctafleet_backup_failures_total"] == 1
    assert "ctafleet_backup_last_success_timestamp_seconds" not in values
    # Only the command publishes it: the long-running processes' registry never has it.
    assert REGISTRY.get_sample_value("ctafleet_backup_failures_total") is None


def test_success_is_notified_only_when_asked(
    webhook: Webhook, sqlite_source: Path, age_key: AgeKey, tmp_path: Path
) -> None:
    cli = local_cli(tmp_path, age_key, f"sqlite:///{sqlite_source}")
    cli.env["CTAFLEET_BACKUP__NOTIFY_WEBHOOK_URL"] = webhook.url
    cli.create()
    assert webhook.received == []
    backup_id = cli.create(CTAFLEET_BACKUP__NOTIFY_ON_SUCCESS="true")
    [call] = webhook.received
    assert call["body"]["event"] == "ctafleet.backup.create.succeeded"
    assert call["body"]["backup_id"] == backup_id


def test_metrics_file_keeps_the_last_success_across_failures(
    sqlite_source: Path, age_key: AgeKey, tmp_path: Path
) -> None:
    metrics_file = tmp_path / "ctafleet_backup.prom"
    cli = local_cli(tmp_path, age_key, f"sqlite:///{sqlite_source}")
    backup_id = cli.create(CTAFLEET_BACKUP__METRICS_FILE=str(metrics_file))
    manifest = json.loads(cli("list", "--json").stdout)[0]
    assert manifest["id"] == backup_id
    first = samples(metrics_file.read_text())
    finished = manifest["finished_at"]
    assert first["ctafleet_backup_last_success_timestamp_seconds"] == pytest.approx(
        __import__("datetime").datetime.fromisoformat(finished).timestamp()
    )
    assert first["ctafleet_backup_last_size_bytes"] == manifest["object"]["size"]
    assert first["ctafleet_backup_failures_total"] == 0
    assert REGISTRY.get_sample_value("ctafleet_backup_last_success_timestamp_seconds") is None

    for expected in (1, 2):
        failed = cli(
            "create",
            "--metrics-file",
            str(metrics_file),
            CTAFLEET_DATABASE__URL="sqlite:///nope.db",
        )
        assert failed.exit_code == 1
        now = samples(metrics_file.read_text())
        assert now["ctafleet_backup_failures_total"] == expected
        assert (
            now["ctafleet_backup_last_success_timestamp_seconds"]
            == (first["ctafleet_backup_last_success_timestamp_seconds"])
        )

    verified = cli("verify", backup_id, "--metrics-file", str(metrics_file))
    assert verified.exit_code == 0, verified.output
    after = samples(metrics_file.read_text())
    assert after["ctafleet_backup_verify_last_success_timestamp_seconds"] > 0
    assert after["ctafleet_backup_failures_total"] == 2


def test_pushgateway_receives_the_metrics(
    pushgateway: str, sqlite_source: Path, age_key: AgeKey, tmp_path: Path
) -> None:
    cli = local_cli(tmp_path, age_key, f"sqlite:///{sqlite_source}")
    cli.env["CTAFLEET_BACKUP__PUSHGATEWAY_URL"] = pushgateway

    def pushed() -> dict[str, float]:
        with urllib.request.urlopen(f"{pushgateway}/metrics", timeout=5) as response:
            return samples(response.read().decode(), job="ctafleet-backup")

    cli.create()
    success = pushed()["ctafleet_backup_last_success_timestamp_seconds"]
    assert success > 0
    assert pushed()["ctafleet_backup_failures_total"] == 0
    for expected in (1, 2):
        failed = cli("create", CTAFLEET_DATABASE__URL="sqlite:///nope.db")
        assert failed.exit_code == 1
        assert pushed()["ctafleet_backup_failures_total"] == expected
        assert pushed()["ctafleet_backup_last_success_timestamp_seconds"] == success
