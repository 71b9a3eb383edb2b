"""The OsmAnd endpoint: a bare ASGI app, for the one request every phone sends every few
seconds.

It sits in front of FastAPI's routing (a router, dependency solving and validation would cost
several times the decode and the queue write). Answers follow Traccar: 200 with an empty body
once the points are queued; 400 for a body that does not parse or a missing id; 401 for a
missing, wrong or revoked credential; 503 with Retry-After when the queue is full or down.
The credential comes as the path segment after the prefix (`/ingest/osmand/<credential>`), a
`token` parameter or `Authorization: Bearer`; a tenant's ingest key in the path admits the
tenant's id-only devices.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from ctafleet.kernel.clock import Clock
from ctafleet.observability.metrics import INGEST_POINTS
from ctafleet.telematics import osmand
from ctafleet.telematics.ingest.credentials import (
    DEVICE_PREFIX,
    TENANT_KEY_PREFIX,
    DeviceAuthenticator,
)
from ctafleet.telematics.ingest.envelope import Envelope
from ctafleet.telematics.ingest.queue import QueueFull, QueueUnavailable, TelemetryQueue

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

PROTOCOL = "osmand"
_EMPTY_OK = {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]}
_EMPTY_BODY = {"type": "http.response.body", "body": b""}
_ACCEPTED = INGEST_POINTS.labels(PROTOCOL, "accepted", "")


def _rejected(reason: str) -> Any:
    return INGEST_POINTS.labels(PROTOCOL, "rejected", reason)


async def _answer(send: Send, status: int, slug: str, detail: str, **headers: str) -> None:
    body = orjson.dumps(
        {"type": f"/problems/{slug}", "title": detail, "status": status, "detail": detail}
    )
    raw = [
        (b"content-type", b"application/problem+json"),
        (b"content-length", str(len(body)).encode()),
        *((k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


async def _body(receive: Receive, limit: int) -> bytes | None:
    """The request body, or None past `limit` bytes (never read further)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"".join(chunks)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks) if len(chunks) != 1 else chunks[0]


class OsmAndIngest:
    def __init__(
        self,
        *,
        auth: DeviceAuthenticator,
        queue: TelemetryQueue,
        clock: Clock,
    ) -> None:
        self.auth = auth
        self.queue = queue
        self.clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        body = await _body(receive, osmand.MAX_PAYLOAD)
        if body is None:
            _rejected("too-large").inc()
            await _answer(send, 400, "osmand-too-large", "the message is larger than 64 KiB")
            return
        content_type = authorization = None
        for key, value in scope["headers"]:
            if key == b"content-type":
                content_type = value.decode("latin-1")
            elif key == b"authorization":
                authorization = value.decode("latin-1")
        now = self.clock.now()
        try:
            decoded = osmand.decode(
                method=scope["method"],
                content_type=content_type,
                query=scope.get("query_string", b""),
                body=body,
                now=now,
            )
        except osmand.DecodeError as exc:
            _rejected(exc.reason).inc()
            await _answer(send, 400, f"osmand-{exc.reason}", str(exc))
            return
        device = await self._authenticate(scope["path"], decoded, authorization)
        if device is None:
            _rejected("unauthorized").inc(max(len(decoded.points), 1))
            await _answer(
                send, 401, "device-unauthorized", "unknown, wrong or revoked device credential"
            )
            return
        envelope = Envelope(
            tenant_id=device.tenant_id,
            device_id=device.device_id,
            vehicle_id=device.vehicle_id,
            received_at=now,
            points=decoded.points,
        )
        try:
            await self.queue.put([envelope])
        except QueueFull as exc:
            _rejected("queue-full").inc(max(len(decoded.points), 1))
            await _answer(
                send,
                503,
                "ingest-queue-full",
                "the ingest queue is full; retry later",
                retry_after=str(exc.retry_after_s),
            )
            return
        except QueueUnavailable:
            _rejected("queue-unavailable").inc(max(len(decoded.points), 1))
            await _answer(
                send, 503, "ingest-unavailable", "the ingest queue is unavailable", retry_after="5"
            )
            return
        _ACCEPTED.inc(len(decoded.points))
        await send(_EMPTY_OK)
        await send(_EMPTY_BODY)

    async def _authenticate(
        self, path: str, decoded: osmand.Decoded, authorization: str | None
    ) -> Any:
        # The last path segment, when it has a credential's form: the dedicated listener takes
        # any path, and a path of a tracker's own (`/gprmc/data`) is no credential.
        segment = path.rstrip("/").rpartition("/")[2]
        if segment.startswith(TENANT_KEY_PREFIX):
            return await self.auth.legacy_device(segment, decoded.device_uid)
        bearer = None
        if authorization is not None and authorization[:7].lower() == "bearer ":
            bearer = authorization[7:].strip()
        if not segment.startswith(DEVICE_PREFIX):
            segment = ""
        credentials = {c for c in (segment, decoded.token, bearer) if c}
        if len(credentials) != 1:
            return None  # none, or two that disagree
        return await self.auth.device(credentials.pop(), decoded.device_uid)


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
