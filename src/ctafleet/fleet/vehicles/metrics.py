"""Business gauges of the vehicle fleet (registered in ctafleet.domains)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from ctafleet.fleet.vehicles.models import Vehicle
from ctafleet.observability.metrics import VEHICLES

STATUSES = ("active", "in_shop", "out_of_service", "retired")


async def refresh_gauges(session: AsyncSession, now: datetime) -> None:
    """Vehicles by status, all tenants (`session` is a system session)."""
    rows = await session.execute(select(Vehicle.status, func.count()).group_by(Vehicle.status))
    by_status = dict(rows.tuples().all())
    for status in STATUSES:
        VEHICLES.labels(status).set(by_status.get(status, 0))
