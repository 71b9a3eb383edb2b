"""Metrics and notifications of the backup commands, against real receivers on loopback: an
HTTP server for the webhook, aiosmtpd for e-mail, Prometheus' Pushgateway, and the text file
node-exporter would read."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from prometheus_client.parser import text_string_to_metric_families

from ctafleet.notifications import NotificationError, send_email, send_webhook
from ctafleet.observability.metrics import REGISTRY
from tests.conftest import service_unavailable
from tests.ops.conftest import AgeKey, free_port, local_cli, stop, wait_listening

# --- receivers --------------------------------------------------------------------------


@dataclass
class Webhook:
    url: str
    received: list[dict[str, Any]] = field(default_factory=list)
    status: int = 204


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            assert self.headers["Content-Type"] == "application/json"
            hook.received.append({"path": self.path, "body": json.loads(body)})
            self.send_response(hook.status)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    hook.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/secret-token-123"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield hook
    server.shutdown()
    server.server_close()


@dataclass
class Mailbox:
    url: str
    messages: list[Any] = field(default_factory=list)


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    box = Mailbox(url="")

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            message = message_from_bytes(envelope.content)
            box.messages.append((envelope.rcpt_tos, message))
            return "250 OK"

    port = free_port()
    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    box.url = f"smtp://127.0.0.1:{port}"
    yield box
    controller.stop()


@pytest.fixture
def pushgateway(tmp_path: Path) -> Iterator[str]:
    binary = shutil.which("prometheus-pushgateway") or shutil.which("pushgateway")
    if binary is None:
        service_unavailable("prometheus-pushgateway is not installed (install-backup-tools.sh)")
    port = free_port()
    process = subprocess.Popen(
        # Debian's build persists to /var/lib by default: each test's gateway stays in memory.
        [binary, f"--web.listen-address=127.0.0.1:{port}", "--persistence.file="],  # type: ignore[list-item]
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


# --- senders ------------------------------------------------------------------------------


def test_send_webhook_posts_json(webhook: Webhook) -> None:
    send_webhook(webhook.url, {"event": "x", "n": 1})
    assert webhook.received == [{"path": "/hooks/secret-token-123", "body": {"event": "x", "n": 1}}]


def test_send_webhook_failure_names_no_token(webhook: Webhook) -> None:
    webhook.status = 500
    with pytest.raises(NotificationError) as err:
        send_webhook(webhook.url, {"event": "x"}, retries=1)
    assert "HTTP 500" in str(err.value)
    assert "secret-token" not in str(err.value)
    assert len(webhook.received) == 2  # retried once
    with pytest.raises(NotificationError, match=r"webhook to http://127\.0\.0\.1"):
        send_webhook(f"http://127.0.0.1:{free_port()}/x", {}, retries=0)
    with pytest.raises(NotificationError, match=r"http:// or https://$"):
        send_webhook("file:///etc/passwd", {})


def test_send_email(mailbox: Mailbox) -> None:
    send_email(
        mailbox.url,
        sender="backups@fleet.example.org",
        to=["ops@fleet.example.org", "dba@fleet.example.org"],
        subject="Backup failed",
        body="details\n",
    )
    [(recipients, message)] = mailbox.messages
    assert recipients == ["ops@fleet.example.org", "dba@fleet.example.org"]
    assert message["Subject"] == "Backup failed"
    assert message["From"] == "backups@fleet.example.org"
    assert message.get_payload().strip() == "details"
    with pytest.raises(NotificationError):
        send_email(
            f"smtp://127.0.0.1:{free_port()}", sender="a@b", to=["c@d"], subject="s", body="b"
        )


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
    failures_before = REGISTRY.get_sample_value("ctafleet_backup_failures_total") or 0
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
    assert REGISTRY.get_sample_value("ctafleet_backup_failures_total") == failures_before + 1


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
    assert REGISTRY.get_sample_value(
        "ctafleet_backup_last_success_timestamp_seconds"
    ) == pytest.approx(first["ctafleet_backup_last_success_timestamp_seconds"])

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
