"""ETag / If-Match optimistic concurrency: the ETag is the row's version."""

from __future__ import annotations

import re
from typing import Any, TypeVar

from fastapi import Header, Response

from ctafleet.api.problems import Problem

_TAG = re.compile(r'^(?:W/)?"v(\d{1,18})"$')


def etag(version: int) -> str:
    return f'"v{version}"'


def set_etag(response: Response, version: int) -> None:
    response.headers["ETag"] = etag(version)


V = TypeVar("V")


def versioned(response: Response, obj: V) -> V:
    """Returns `obj`, with its version as the response's ETag."""
    version: Any = getattr(obj, "version")  # noqa: B009 - any versioned row or mapping
    set_etag(response, int(version))
    return obj


def if_match_version(
    if_match: str | None = Header(
        None,
        alias="If-Match",
        description='ETag from a previous read (`"v3"`); a stale one answers 412.',
    ),
) -> int | None:
    """The version the client last saw, None when it sent no If-Match (or `*`).

    Anything that is not one of our ETags, however long, can never match: 412, like a stale
    one, rather than a schema error.
    """
    if if_match is None or if_match.strip() == "*":
        return None
    match = _TAG.match(if_match.strip())
    if match is None:
        raise Problem(412, "precondition-failed", "If-Match does not hold an ETag of this object")
    return int(match.group(1))
