"""Business gauges of telematics (registered in ctafleet.domains)."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import distinct, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from ctafleet.observability.metrics import VEHICLES_REPORTING
from ctafleet.telematics.models import Device

REPORTING_WINDOW = timedelta(minutes=5)


async def refresh_gauges(session: AsyncSession, now: datetime) -> None:
    """Vehicles whose device reported in the last five minutes (`session`: system session)."""
    since = now - REPORTING_WINDOW
    reporting = await session.scalar(
        select(func.count(distinct(Device.vehicle_id))).where(
            Device.vehicle_id.is_not(None), Device.last_seen_at > since
        )
    )
    VEHICLES_REPORTING.set(reporting or 0)
