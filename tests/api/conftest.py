"""Helpers for tests that need an app of their own (other settings, another client address)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from ctafleet.app import create_app
from ctafleet.clock import FrozenClock
from ctafleet.config import Settings
from tests.conftest import Api, Backend, make_settings


@asynccontextmanager
async def own_app(
    backend: Backend,
    data_dir: Path,
    *,
    client_ip: str = "127.0.0.1",
    base_url: str = "http://testserver",
    settings: Settings | None = None,
    **overrides: Any,
) -> AsyncIterator[Api]:
    """A separate app instance on the shared database, closed (engine, Redis) afterwards.

    Replicas of one deployment share `settings` (above all the signing key); pass the same one.
    """
    settings = settings or make_settings(backend, data_dir, **overrides)
    clock = FrozenClock()
    app = create_app(settings, clock=clock)
    transport = httpx.ASGITransport(app=app, client=(client_ip, 50123))
    try:
        async with httpx.AsyncClient(transport=transport, base_url=base_url) as client:
            yield Api(client=client, app=app, settings=settings, clock=clock, backend=backend)
    finally:
        state = app.state.ctafleet
        await state.db.dispose()
        if state.redis is not None:
            await state.redis.aclose()
