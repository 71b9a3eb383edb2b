"""What a role limited to its own records (a driver) may see of the fleet: the driver linked to
their user, the vehicles assigned to that driver now, and that driver's assignments."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, false, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from ctafleet.fleet.assignments.models import Assignment
from ctafleet.fleet.drivers.models import Driver
from ctafleet.fleet.vehicles.models import Vehicle
from ctafleet.kernel.context import Actor
from ctafleet.kernel.errors import NotFound


def active_at(now: datetime) -> ColumnElement[bool]:
    return and_(
        Assignment.starts_at <= now, or_(Assignment.ends_at.is_(None), Assignment.ends_at > now)
    )


async def own_driver_id(session: AsyncSession, actor: Actor) -> uuid.UUID | None:
    if actor.user_id is None:
        return None
    return (await session.scalars(select(Driver.id).where(Driver.user_id == actor.user_id))).first()


async def restrict(
    session: AsyncSession, actor: Actor, stmt: Select[Any], model: type[Any]
) -> Select[Any]:
    """`stmt` limited to what the actor may see (unchanged for roles that see everything)."""
    if not actor.own_records_only:
        return stmt
    driver_id = await own_driver_id(session, actor)
    if driver_id is None:
        return stmt.where(false())
    if model is Driver:
        return stmt.where(Driver.id == driver_id)
    if model is Assignment:
        return stmt.where(Assignment.driver_id == driver_id)
    if model is Vehicle:
        return stmt.where(
            Vehicle.id.in_(
                select(Assignment.vehicle_id).where(
                    Assignment.driver_id == driver_id, active_at(actor.now())
                )
            )
        )
    return stmt.where(false())


async def check_visible(
    session: AsyncSession, actor: Actor, model: type[Any], entity_id: uuid.UUID, entity: str
) -> None:
    """`NotFound` unless the actor may see the object (which exists in the tenant)."""
    if not actor.own_records_only:
        return
    stmt = await restrict(session, actor, select(model.id).where(model.id == entity_id), model)
    if (await session.scalars(stmt)).first() is None:
        raise NotFound(entity)
