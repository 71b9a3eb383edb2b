"""The one assertion for RFC 9457 problem answers."""

from __future__ import annotations

from typing import Any

import httpx

PROBLEM_JSON = "application/problem+json"


def assert_problem(r: httpx.Response, status: int, slug: str | None = None) -> dict[str, Any]:
    """The response is a problem with this status (and `type` slug) and a request id."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM_JSON), r.headers["content-type"]
    body: dict[str, Any] = r.json()
    assert body["status"] == status
    assert body["request_id"]
    if slug is not None:
        assert body["type"] == f"/problems/{slug}", body
    return body


def assert_unauthorized(r: httpx.Response) -> None:
    """A refused access token: 401 problem that tells the client to send a bearer token."""
    assert_problem(r, 401, "unauthorized")
    assert r.headers.get("www-authenticate") == "Bearer", r.headers
