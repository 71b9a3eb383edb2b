"""The access log: one line per HTTP request, written for every request, so it is rendered here
directly instead of through the processor chain of the other log lines.

Its fields are the server's own: the method (one of the known ones, else `OTHER`), the route
template (never the raw path, which can carry ids and tokens), the status, the duration, the
client address, and the bound context (request id, tenant, user, trace). None of them is text a
client chose, except the request id, which `api.requestid` accepts only in a shape that cannot
be a secret; so the line needs no redaction pass.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
import structlog

from ctafleet.observability.tracing import add_trace_ids

LOGGER = "ctafleet.access"


def render_json(event: dict[str, Any]) -> str:
    return orjson.dumps(event, default=str).decode()


def render_console(event: dict[str, Any]) -> str:
    extra = " ".join(
        f"{k}={v}"
        for k, v in event.items()
        if k not in ("timestamp", "level", "event", "logger", "method", "route", "status")
    )
    return (
        f"{event['timestamp']} [info     ] {event['method']} {event['route']} "
        f"{event['status']} [{LOGGER}] {extra}"
    )


_render: Callable[[dict[str, Any]], str] = render_json


def use_renderer(json_lines: bool) -> None:
    """Set by `configure_logging`: the access line follows the format of the other lines."""
    global _render
    _render = render_json if json_lines else render_console


class AccessLog:
    def __init__(self) -> None:
        self.logger = logging.getLogger(LOGGER)

    def request(
        self, *, method: str, route: str, status: int, duration_ms: float, client: str
    ) -> None:
        if not self.logger.isEnabledFor(logging.INFO):
            return
        event: dict[str, Any] = {
            "event": "request",
            "method": method,
            "route": route,
            "status": status,
            "duration_ms": duration_ms,
            "client": client,
            **structlog.contextvars.get_contextvars(),
        }
        add_trace_ids(None, "info", event)
        event["level"] = "info"
        event["logger"] = LOGGER
        event["timestamp"] = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        self.logger.info(_render(event))
