"""The edge of every HTTP request, in one pure-ASGI middleware: request id, access log and
metrics, security headers, the request size limit and NUL characters; and, innermost, the 500
answer for an unhandled error.

One layer rather than five: each layer of ASGI middleware wraps `receive` and `send` again and
costs its own calls on every request, the cheapest ones included (`/healthz` is probed several
times a second by every load balancer and kubelet).
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

import structlog
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ctafleet.api.problems import PROBLEM_MEDIA_TYPE, internal_error_response, problem_type
from ctafleet.api.requestid import new_request_id, set_request_id
from ctafleet.api.state import REQUEST_SESSIONS, close_request_sessions
from ctafleet.observability.access import AccessLog
from ctafleet.observability.metrics import HTTP_IN_FLIGHT, http_observer, route_template

error_log = structlog.get_logger("ctafleet.api")

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; font-src 'self'; object-src 'none'; "
    "base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)
HSTS = "max-age=63072000; includeSubDomains"
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", CSP.encode()),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=(self)"),
)
_HSTS = (b"strict-transport-security", HSTS.encode())
_NO_STORE = (b"cache-control", b"no-store")
# Methods counted and logged by name; anything else is `OTHER` (bounded label values, and no
# client text in the log line).
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

# A JSON `\u0000` escape: preceded by an even number of backslashes (`\\u0000` is text).
_JSON_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return str(value.decode("latin-1"))
    return None


async def _send_problem(
    scope: Scope,
    send: Send,
    status: int,
    slug: str,
    title: str,
    detail: str,
    *,
    close: bool = False,
    **extra: Any,
) -> None:
    """A problem answer from the edge, below FastAPI's exception handlers."""
    body: dict[str, Any] = {
        "type": problem_type(slug),
        "title": title,
        "status": status,
        "detail": detail,
        "instance": scope.get("path"),
        "request_id": scope.get("state", {}).get("request_id"),
        **extra,
    }
    payload = json.dumps(body).encode()
    headers = [
        (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
        (b"content-length", str(len(payload)).encode()),
    ]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


def _replay(messages: list[Message], then: Receive | None = None) -> Receive:
    queue = list(messages)

    async def receive() -> Message:
        if queue:
            return queue.pop(0)
        if then is not None:
            return await then()
        return {"type": "http.disconnect"}

    return receive


class _Refused(Exception):
    """The request was answered at the edge (size, NUL): the app never runs."""


class EdgeMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        body_limits: dict[str, int] | None = None,
        access_log: AccessLog | None = None,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        # Paths allowed a body of another size than max_body_bytes (the telemetry batch).
        self.body_limits = body_limits or {}
        self.access_log = access_log or AccessLog()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        incoming_id = content_length = content_type = transfer_encoding = None
        for key, value in scope.get("headers", ()):
            if key == b"x-request-id":
                incoming_id = value.decode("latin-1")
            elif key == b"content-length":
                content_length = value
            elif key == b"content-type":
                content_type = value
            elif key == b"transfer-encoding":
                transfer_encoding = value
        rid = new_request_id(incoming_id)
        set_request_id(rid)
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=rid)
        scope.setdefault("state", {})["request_id"] = rid
        scope[REQUEST_SESSIONS] = []
        https = scope.get("scheme") == "https"
        api = scope.get("path", "").startswith("/api/")
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", ()))
                present = {k.lower() for k, _ in headers}
                headers.append((b"x-request-id", rid.encode()))
                headers += [h for h in SECURITY_HEADERS if h[0] not in present]
                if https and _HSTS[0] not in present:
                    headers.append(_HSTS)
                if api and b"cache-control" not in present:
                    headers.append(_NO_STORE)
                message["headers"] = headers
            await send(message)

        HTTP_IN_FLIGHT.inc()
        try:
            try:
                receive = await self._checked_body(
                    scope, receive, send_wrapper, content_length, content_type, transfer_encoding
                )
            except _Refused:
                return
            await self.app(scope, receive, send_wrapper)
        finally:
            HTTP_IN_FLIGHT.dec()
            method = scope.get("method", "GET")
            if method not in KNOWN_METHODS:
                method = "OTHER"
            template = route_template(scope)
            elapsed = time.perf_counter() - started
            if scope.get("path") != "/metrics":  # Prometheus's own scrapes are not traffic
                http_observer(method, template, status)(elapsed)
            self.access_log.request(
                method=method,
                route=template,
                status=status,
                duration_ms=round(elapsed * 1000, 2),
                client=(scope.get("client") or ("", 0))[0],
            )
            structlog.contextvars.clear_contextvars()
            set_request_id(None)
            await close_request_sessions(scope)

    async def _checked_body(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        content_length: bytes | None,
        content_type: bytes | None,
        transfer_encoding: bytes | None,
    ) -> Receive:
        """`receive` for the app, after the checks that refuse a request before it runs."""
        raw_path = scope.get("raw_path") or scope.get("path", "").encode()
        if b"\x00" in raw_path or b"%00" in raw_path or "\x00" in scope.get("path", ""):
            await self._refuse_nul(scope, send, "path")
        if b"%00" in scope.get("query_string", b""):
            await self._refuse_nul(scope, send, "query")
        if content_length is not None:
            try:
                declared = int(content_length)
            except ValueError:
                declared = 0
            limit = self.body_limits.get(scope.get("path", ""), self.max_body_bytes)
            if declared > limit:
                await self._refuse_size(scope, send, limit)
            if declared == 0 and transfer_encoding is None:
                return receive  # no body: nothing to read here
        elif transfer_encoding is None:
            return receive
        # Read the body here, within the limit (a Content-Length may lie), then replay it.
        limit = self.body_limits.get(scope.get("path", ""), self.max_body_bytes)
        chunks: list[bytes] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return _replay([message])
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > limit:
                await self._refuse_size(scope, send, limit)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        # PostgreSQL text cannot hold NUL: such a value would fail in the database (a 500) on
        # PostgreSQL and be stored on SQLite; refusing it here treats it the same everywhere.
        is_json = content_type is not None and b"json" in content_type.lower()
        if is_json and (b"\x00" in body or _JSON_NUL.search(body)):
            await self._refuse_nul(scope, send, "body")
        return _replay([{"type": "http.request", "body": body, "more_body": False}], receive)

    async def _refuse_size(self, scope: Scope, send: Send, limit: int) -> None:
        await _send_problem(
            scope,
            send,
            413,
            "payload-too-large",
            "Payload too large",
            f"request bodies are limited to {limit} bytes",
            close=True,
        )
        raise _Refused

    async def _refuse_nul(self, scope: Scope, send: Send, where: str) -> None:
        await _send_problem(
            scope,
            send,
            422,
            "validation-error",
            "Validation error",
            "the request did not match the schema; see `errors`",
            errors=[{"loc": [where], "msg": "NUL characters are not allowed", "type": "nul"}],
        )
        raise _Refused


class UnhandledErrorMiddleware:
    """Answers an unhandled exception with the 500 problem from inside the middleware stack.

    Starlette's handler for `Exception` runs outside every middleware, so its answer would lack
    the request id (header and body), the security headers and CORS. Installed innermost; with
    `debug` the exception goes on to Starlette's traceback page instead.
    """

    def __init__(self, app: ASGIApp, debug: bool = False) -> None:
        self.app = app
        self.debug = debug

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception:
            if started or self.debug:
                raise
            error_log.exception("unhandled_error", path=scope.get("path"))
            await internal_error_response(Request(scope))(scope, receive, send)
