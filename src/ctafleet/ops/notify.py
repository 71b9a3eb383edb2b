"""How the operations commands tell people how they ended: a JSON webhook and e-mail over SMTP.

Small and synchronous on purpose: the command-line jobs (backups) call them directly. Each
delivery is counted in `ctafleet_notification_deliveries_total{channel, outcome}`. These are
the operators' channels, configured by CTAFLEET_BACKUP__NOTIFY_* and CTAFLEET_NOTIFICATIONS__
SMTP settings; the notifications domain (users' alerts) is a separate package.
"""

from __future__ import annotations

import json
import smtplib
import socket
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from datetime import datetime
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any
from urllib.parse import unquote, urlsplit

from ctafleet import __version__
from ctafleet.config import Settings
from ctafleet.observability.metrics import NOTIFICATIONS

__all__ = ["NotificationError", "notify_backup", "send_email", "send_webhook"]

_LOOPBACK = {"127.0.0.1", "::1", "localhost"}


class NotificationError(Exception):
    """A notification could not be delivered. The message never holds a secret."""


def _redacted(url: str) -> str:
    """The URL without credentials, query or path (webhook paths often carry a token)."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    return f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}"


def send_webhook(
    url: str,
    payload: Mapping[str, Any],
    *,
    timeout: float = 10.0,
    retries: int = 2,
    headers: Mapping[str, str] | None = None,
) -> None:
    """POST `payload` as JSON; a 2xx answer is success. Connection errors and 5xx answers are
    retried with a short back-off; a 4xx answer is not (the request itself is wrong)."""
    if urlsplit(url).scheme not in ("http", "https"):
        NOTIFICATIONS.labels("webhook", "failure").inc()
        raise NotificationError("webhook URL must start with http:// or https://")
    body = json.dumps(payload, default=str).encode()
    request_headers = {
        "Content-Type": "application/json",
        "User-Agent": f"ctafleet/{__version__}",
        **(headers or {}),
    }
    last = ""
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(min(2**attempt, 10))
        request = urllib.request.Request(url, data=body, headers=request_headers, method="POST")  # noqa: S310 - scheme checked above
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
                response.read()
            NOTIFICATIONS.labels("webhook", "success").inc()
            return
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
            if exc.code < 500:
                break
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            last = str(reason)
    NOTIFICATIONS.labels("webhook", "failure").inc()
    raise NotificationError(f"webhook to {_redacted(url)} failed: {last}")


def send_email(
    smtp_url: str,
    *,
    sender: str,
    to: Sequence[str],
    subject: str,
    body: str,
    timeout: float = 10.0,
) -> None:
    """Send a plain-text e-mail.

    `smtp://[user:password@]host[:port]` uses STARTTLS when the server offers it;
    `smtps://` connects with TLS from the start (port 465). Credentials are never sent over a
    plain connection, except to a server on this machine.
    """
    if not to:
        raise NotificationError("no e-mail recipients")
    parts = urlsplit(smtp_url)
    if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
        NOTIFICATIONS.labels("email", "failure").inc()
        raise NotificationError("SMTP URL must look like smtp://user@host:587 or smtps://host")
    implicit_tls = parts.scheme == "smtps"
    host = parts.hostname
    port = parts.port or (465 if implicit_tls else 25)
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(to)
    message["Subject"] = subject
    message["Date"] = formatdate(localtime=False, usegmt=True)
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
    message.set_content(body)
    context = ssl.create_default_context()
    try:
        smtp: smtplib.SMTP
        if implicit_tls:
            smtp = smtplib.SMTP_SSL(host, port, timeout=timeout, context=context)
        else:
            smtp = smtplib.SMTP(host, port, timeout=timeout)
        with smtp:
            smtp.ehlo()
            secure = implicit_tls
            if not implicit_tls and smtp.has_extn("starttls"):
                smtp.starttls(context=context)
                smtp.ehlo()
                secure = True
            if parts.username:
                if not secure and host not in _LOOPBACK:
                    raise NotificationError(
                        f"SMTP server {host}:{port} offers no TLS; refusing to send credentials"
                    )
                smtp.login(unquote(parts.username), unquote(parts.password or ""))
            smtp.send_message(message)
    except NotificationError:
        NOTIFICATIONS.labels("email", "failure").inc()
        raise
    except (smtplib.SMTPException, OSError) as exc:
        NOTIFICATIONS.labels("email", "failure").inc()
        raise NotificationError(
            f"e-mail via {host}:{port} failed: {type(exc).__name__}: {exc}"
        ) from None
    NOTIFICATIONS.labels("email", "success").inc()


def notify_backup(
    settings: Settings,
    *,
    operation: str,
    ok: bool,
    when: datetime,
    backup_id: str | None = None,
    error: str | None = None,
    details: Mapping[str, Any] | None = None,
) -> list[str]:
    """Tell the configured webhook and e-mail recipients how a `ctafleet backup` command
    ended (failures always, successes with CTAFLEET_BACKUP__NOTIFY_ON_SUCCESS); what could not
    be delivered comes back as warnings."""
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
