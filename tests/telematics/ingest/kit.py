"""Helpers for pipeline tests: register a device, send OsmAnd requests, drain the queue."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from sqlalchemy import select

from ctafleet.telematics.ingest.writer import WriteResult
from ctafleet.telematics.models import LastPosition, Position
from tests.kit.app import Api, TenantUsers
from tests.kit.factories import new_device

OSMAND = "/ingest/osmand"


async def device(api: Api, t: TenantUsers, **overrides: Any) -> dict[str, Any]:
    overrides.setdefault("unique_id", f"imei-{uuid.uuid4().hex[:15]}")
    return await new_device(api, t, **overrides)


async def drain(api: Api) -> int:
    """Run the in-process worker until the queue is empty; the points it stored."""
    worker = api.app.state.ctafleet.telemetry.worker
    stored = 0
    while True:
        outcome = await worker.run_once()
        stored += int(outcome.stored)
        if outcome.entries == 0:
            return stored


async def positions(api: Api, device_id: str) -> list[Position]:
    async with api.db.system_session() as session:
        return list(
            await session.scalars(
                select(Position)
                .where(Position.device_id == uuid.UUID(device_id))
                .order_by(Position.fix_time)
            )
        )


async def last_position(api: Api, device_id: str) -> LastPosition | None:
    async with api.db.system_session() as session:
        return await session.get(LastPosition, uuid.UUID(device_id))


@contextlib.contextmanager
def after_commit_spy(api: Api, capture: Callable[[WriteResult], None]) -> Iterator[None]:
    """`capture` sees every result the in-process worker hands its after-commit stages (the
    live feed, notifications) while the block runs: committed batches and offline sweeps."""
    worker = api.app.state.ctafleet.telemetry.worker

    async def stage(result: WriteResult) -> None:
        capture(result)

    original = worker.after_commit
    worker.after_commit = (*original, stage)
    try:
        yield
    finally:
        worker.after_commit = original
