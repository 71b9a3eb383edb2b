"""Structured JSON logs to stdout; secrets are redacted before any line is written."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import orjson
import structlog

from ctafleet.config import Settings
from ctafleet.observability import access as access_log
from ctafleet.observability.tracing import add_trace_ids

REDACTED = "[redacted]"
_SECRET_KEYS = re.compile(
    r"pass(word)?|secret|token|credential|authorization|api[_-]?key|cookie|totp|recovery", re.I
)
# Values that look like secrets wherever they appear: bearer tokens, JWTs, our prefixed secrets,
# passwords in URLs and `password=...` pairs (query strings, form bodies, messages).
_SECRET_VALUES = re.compile(
    r"(?P<bearer>\bbearer\s+)[A-Za-z0-9._~+/-]+=*"
    r"|eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"
    r"|\b(?:ctr|ctd)_[A-Za-z0-9_-]{16,}"
    # Up to the last `@` before the path: a password may itself contain `@`.
    r"|(?P<userinfo>://[^:/@\s]+:)[^\s/]+@"
    r"|(?P<pair>\b(?:pass(?:word)?|passwd|pwd|secret|token|api[_-]?key|access_token|"
    r"refresh_token|client_secret)=)[^&\s\"',;]+",
    re.IGNORECASE,
)
_PLAIN = (int, float, bool, type(None))
# structlog's own bookkeeping (the stdlib LogRecord), removed before rendering.
_META = frozenset({"_record", "_from_structlog"})


def _scrub_text(text: str) -> str:
    def repl(m: re.Match[str]) -> str:
        if m.group("bearer"):
            return m.group("bearer") + REDACTED
        if m.group("userinfo"):
            return m.group("userinfo") + REDACTED + "@"
        if m.group("pair"):
            return m.group("pair") + REDACTED
        return REDACTED

    return _SECRET_VALUES.sub(repl, text)


def looks_secret(text: str) -> bool:
    """Would redaction change this text (a token, a JWT, one of our prefixed secrets)?"""
    return _SECRET_VALUES.search(text) is not None


def _scrub(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return _scrub_text(value)
    if isinstance(value, _PLAIN):
        return value
    if depth > 5:
        # Too deep to walk: the text of it is still scrubbed.
        return _scrub_text(str(value))
    if isinstance(value, dict):
        return {
            k: (REDACTED if isinstance(k, str) and _SECRET_KEYS.search(k) else _scrub(v, depth + 1))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [_scrub(v, depth + 1) for v in value]
    if isinstance(value, bytes):
        return _scrub_text(value.decode("utf-8", "replace"))
    # URLs, exceptions, models...: the JSON renderer would print their repr unscrubbed.
    return _scrub_text(str(value))


def redact_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key in list(event_dict):
        if key in _META:
            continue
        if key != "event" and _SECRET_KEYS.search(key):
            event_dict[key] = REDACTED
        else:
            event_dict[key] = _scrub(event_dict[key])
    return event_dict


DRIVER_LOGGERS = ("aiosqlite", "asyncpg")


def _json(obj: Any, **_kw: Any) -> str:
    return orjson.dumps(obj, default=str).decode()


def json_lines(settings: Settings) -> bool:
    """JSON unless told otherwise, or unless a person reads the terminal (`make demo`)."""
    configured = settings.observability.log_json
    if configured is not None:
        return configured
    return not (hasattr(sys.stdout, "isatty") and sys.stdout.isatty())


def configure_logging(settings: Settings) -> None:
    level = getattr(logging, settings.observability.log_level)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        add_trace_ids,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        redact_secrets,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=_json)
        if json_lines(settings)
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        foreign_pre_chain=shared,
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
    # The access log renders its own lines (see observability/access.py), to the same stream.
    access = logging.getLogger(access_log.LOGGER)
    access_handler = logging.StreamHandler(sys.stdout)
    access_handler.setFormatter(logging.Formatter("%(message)s"))
    access.handlers = [access_handler]
    access.propagate = False
    access_log.use_renderer(json_lines(settings))
    # Database drivers log their statements' parameters (password hashes, TOTP secrets,
    # credential digests) at DEBUG: never let them, whatever the level. SQLAlchemy's own
    # engine logger is told to hide parameters (db/engine.py).
    for name in DRIVER_LOGGERS:
        logging.getLogger(name).setLevel(max(level, logging.INFO))
    # uvicorn's own access log would duplicate ours and print raw query strings.
    logging.getLogger("uvicorn.access").disabled = True
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers = []
        logging.getLogger(name).propagate = True
