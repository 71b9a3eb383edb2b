"""Pure ASGI middleware: request id and access log, security headers, request size limit,
unhandled errors."""

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
from ctafleet.observability.metrics import route_template

access_log = structlog.get_logger("ctafleet.access")
error_log = structlog.get_logger("ctafleet.api")

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; font-src 'self'; object-src 'none'; "
    "base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)
HSTS = "max-age=63072000; includeSubDomains"


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return str(value.decode("latin-1"))
    return None


class RequestContextMiddleware:
    """Assigns the request id, binds it to the log context and writes one access-log line."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = new_request_id(_header(scope, b"x-request-id"))
        token = set_request_id(rid)
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=rid)
        scope.setdefault("state", {})["request_id"] = rid
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", rid.encode()))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            access_log.info(
                "request",
                method=scope.get("method"),
                route=route_template(scope),
                status=status,
                duration_ms=round((time.perf_counter() - started) * 1000, 2),
                client=(scope.get("client") or ("", 0))[0],
            )
            structlog.contextvars.clear_contextvars()
            set_request_id(None)
            del token


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        https = scope.get("scheme") == "https"

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                extra = [
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"x-frame-options", b"DENY"),
                    (b"content-security-policy", CSP.encode()),
                    (b"cross-origin-opener-policy", b"same-origin"),
                    (b"permissions-policy", b"camera=(), microphone=(), geolocation=(self)"),
                ]
                if https:
                    extra.append((b"strict-transport-security", HSTS.encode()))
                if scope.get("path", "").startswith("/api/") and b"cache-control" not in present:
                    extra.append((b"cache-control", b"no-store"))
                headers += [(k, v) for k, v in extra if k not in present]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_wrapper)


class BodySizeLimitMiddleware:
    """Refuses bodies over the limit by Content-Length up front, or while streaming."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def _reject(self, scope: Scope, send: Send) -> None:
        await _send_problem(
            scope,
            send,
            413,
            "payload-too-large",
            "Payload too large",
            f"request bodies are limited to {self.max_bytes} bytes",
            close=True,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = _header(scope, b"content-length")
        if length is not None:
            try:
                too_big = int(length) > self.max_bytes
            except ValueError:
                too_big = False
            if too_big:
                await self._reject(scope, send)
                return
        # No (or a lying) Content-Length: read the body here, within the limit, then replay it.
        chunks: list[bytes] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay([message]), send)
                return
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > self.max_bytes:
                await self._reject(scope, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replay: list[Message] = [
            {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        ]
        await self.app(scope, _replay(replay, receive), send)


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
    """A problem answer from middleware, below FastAPI's exception handlers."""
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


# A JSON `\u0000` escape: preceded by an even number of backslashes (`\\u0000` is text).
_JSON_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


class NulCharacterMiddleware:
    """Refuses NUL characters in the path, the query string and JSON bodies with a 422.

    PostgreSQL text cannot hold NUL, so such a value would fail in the database (a 500) on
    PostgreSQL and be stored on SQLite; refusing it here treats it the same everywhere.
    Installed inside the body size limit, so the body it reads is already bounded.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def _reject(self, scope: Scope, send: Send, where: str) -> None:
        await _send_problem(
            scope,
            send,
            422,
            "validation-error",
            "Validation error",
            "the request did not match the schema; see `errors`",
            errors=[{"loc": [where], "msg": "NUL characters are not allowed", "type": "nul"}],
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw_path = scope.get("raw_path") or scope.get("path", "").encode()
        if b"\x00" in raw_path or b"%00" in raw_path or "\x00" in scope.get("path", ""):
            await self._reject(scope, send, "path")
            return
        if b"%00" in scope.get("query_string", b""):
            await self._reject(scope, send, "query")
            return
        content_type = (_header(scope, b"content-type") or "").lower()
        if "json" not in content_type:
            await self.app(scope, receive, send)
            return
        messages: list[Message] = []
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request" or not message.get("more_body", False):
                break
        body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.request")
        if b"\x00" in body or _JSON_NUL.search(body):
            await self._reject(scope, send, "body")
            return
        await self.app(scope, _replay(messages, receive), send)


def _replay(messages: list[Message], then: Receive | None = None) -> Receive:
    queue = list(messages)

    async def receive() -> Message:
        if queue:
            return queue.pop(0)
        if then is not None:
            return await then()
        return {"type": "http.disconnect"}

    return receive


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
