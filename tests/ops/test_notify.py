"""The operators' notification senders (ctafleet.ops.notify) against real receivers."""

from __future__ import annotations

import pytest

from ctafleet.ops.notify import NotificationError, send_email, send_webhook
from tests.kit.net import free_port
from tests.ops.conftest import Mailbox, Webhook

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
