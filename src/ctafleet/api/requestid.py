"""Request ids: accepted from `X-Request-ID` when well-formed, generated otherwise."""

from __future__ import annotations

import re
import uuid
from contextvars import ContextVar

from ctafleet.observability.logging import looks_secret

_request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
_VALID = re.compile(r"^[A-Za-z0-9._:-]{8,64}$")


def current_request_id() -> str | None:
    return _request_id.get()


def new_request_id(incoming: str | None) -> str:
    """The client's id when well-formed and not shaped like a secret (it is logged as is)."""
    if incoming and _VALID.match(incoming) and not looks_secret(incoming):
        return incoming
    return uuid.uuid4().hex


def set_request_id(value: str | None) -> object:
    return _request_id.set(value)
