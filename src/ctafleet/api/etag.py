"""ETag / If-Match optimistic concurrency: the ETag is the row's version."""

from __future__ import annotations

import re
from typing import Any, TypeVar

from fastapi import Header, Response

from ctafleet.api.problems import Problem
from ctafleet.db.toolkit import IfMatch

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


MAX_TAGS = 32


async def if_match_version(
    if_match: str | None = Header(
        None,
        alias="If-Match",
        description='ETag(s) from previous reads (`"v3"`, or a list `"v3", "v4"`); the change '
        "applies if the object is still at one of them, otherwise 412.",
    ),
) -> IfMatch | None:
    """The If-Match header as versions (see `parse_if_match`). Async: FastAPI runs a plain
    function dependency in a worker thread, a hop that costs more than the parsing."""
    return parse_if_match(if_match)


def parse_if_match(if_match: str | None) -> IfMatch | None:
    """The versions the client accepts (RFC 9110 allows a list), None when it sent no If-Match
    (or `*`).

    A tag that is not one of ours can never match; a header with none of ours answers 412,
    like a stale one, rather than a schema error.
    """
    if if_match is None or if_match.strip() == "*":
        return None
    versions = set()
    for part in if_match.split(",", MAX_TAGS)[:MAX_TAGS]:
        match = _TAG.match(part.strip())
        if match is not None:
            versions.add(int(match.group(1)))
    if not versions:
        raise Problem(412, "precondition-failed", "If-Match does not hold an ETag of this object")
    return frozenset(versions)
