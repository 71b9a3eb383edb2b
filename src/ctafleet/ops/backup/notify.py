"""Tell people how a backup command ended: webhook and e-mail, on failure (and on success if
CTAFLEET_BACKUP__NOTIFY_ON_SUCCESS)."""

from __future__ import annotations

import socket
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from ctafleet.config import Settings
from ctafleet.notifications import NotificationError, send_email, send_webhook


def notify(
    settings: Settings,
    *,
    operation: str,
    ok: bool,
    when: datetime,
    backup_id: str | None = None,
    error: str | None = None,
    details: Mapping[str, Any] | None = None,
) -> list[str]:
    """Send the configured notifications; what could not be delivered comes back as warnings."""
    backup = settings.backup
    if ok and not backup.notify_on_success:
        return []
    host = socket.gethostname()
    outcome = "succeeded" if ok else "failed"
    payload: dict[str, Any] = {
        "event": f"ctafleet.backup.{operation}.{outcome}",
        "operation": operation,
        "outcome": outcome,
        "backup_id": backup_id,
        "error": error,
        "host": host,
        "time": when.isoformat(),
        "details": dict(details or {}),
    }
    warnings: list[str] = []
    webhook = backup.notify_webhook_url.get_secret_value()
    if webhook:
        try:
            send_webhook(webhook, payload)
        except NotificationError as exc:
            warnings.append(str(exc))
    smtp_url = settings.notifications.smtp_url
    if backup.notify_email:
        if not smtp_url:
            warnings.append(
                "CTAFLEET_BACKUP__NOTIFY_EMAIL is set but CTAFLEET_NOTIFICATIONS__SMTP_URL is empty"
            )
        else:
            subject = f"[CTAFleet] backup {operation} {outcome} on {host}"
            lines = [
                f"ctafleet backup {operation} {outcome} on {host} at {when.isoformat()}.",
                "",
            ]
            if backup_id:
                lines.append(f"Backup: {backup_id}")
            if error:
                lines.append(f"Error: {error}")
            for key, value in (details or {}).items():
                lines.append(f"{key}: {value}")
            try:
                send_email(
                    smtp_url,
                    sender=settings.notifications.email_from,
                    to=backup.notify_email,
                    subject=subject,
                    body="\n".join(lines) + "\n",
                )
            except NotificationError as exc:
                warnings.append(str(exc))
    return warnings
