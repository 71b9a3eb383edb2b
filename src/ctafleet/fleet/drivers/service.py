"""Drivers: create, read, list, change; optionally linked to the user who logs in as them."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import date
from typing import Any

from sqlalchemy import Select, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from ctafleet.auth import users
from ctafleet.db import toolkit
from ctafleet.db.toolkit import IfMatch
from ctafleet.fleet import visibility
from ctafleet.fleet.drivers.models import Driver
from ctafleet.fleet.drivers.schemas import DriverCreate, DriverUpdate
from ctafleet.fleet.vehicles.service import prefix_pattern
from ctafleet.kernel.context import Actor
from ctafleet.kernel.errors import Conflict, Invalid

ENTITY = "driver"
NULLABLE = frozenset({"email", "phone", "user_id"})


def drivers_query(
    *,
    status: Sequence[str] | None = None,
    licence_expires_before: date | None = None,
    q: str | None = None,
) -> Select[Driver]:
    stmt = select(Driver)
    if status:
        stmt = stmt.where(Driver.status.in_(status))
    if licence_expires_before:
        stmt = stmt.where(Driver.licence_expiry < licence_expires_before)
    if q:
        pattern = prefix_pattern(q)
        stmt = stmt.where(
            or_(
                Driver.last_name.ilike(pattern, escape="\\"),
                Driver.first_name.ilike(pattern, escape="\\"),
                Driver.employee_number.ilike(pattern, escape="\\"),
            )
        )
    return stmt


async def list_query(*, session: AsyncSession, actor: Actor, **filters: Any) -> Select[Driver]:
    return await visibility.restrict(session, actor, drivers_query(**filters), Driver)


async def _check_user_link(
    session: AsyncSession, actor: Actor, user_id: uuid.UUID | None, exclude: uuid.UUID | None
) -> None:
    if user_id is None:
        return
    await users.get_user(session=session, actor=actor, user_id=user_id)
    stmt = select(Driver.id).where(Driver.user_id == user_id)
    if exclude:
        stmt = stmt.where(Driver.id != exclude)
    if (await session.scalars(stmt)).first():
        raise Conflict("user-already-linked", "this user is already linked to another driver")


async def _unique_employee_number(
    session: AsyncSession, number: str, exclude: uuid.UUID | None
) -> None:
    stmt = select(Driver.id).where(Driver.employee_number == number)
    if exclude is not None:
        stmt = stmt.where(Driver.id != exclude)
    if (await session.scalars(stmt)).first():
        raise Conflict("duplicate-employee-number", f"employee number {number} is already used")


async def create_driver(*, session: AsyncSession, actor: Actor, data: DriverCreate) -> Driver:
    async def recheck() -> None:
        await _check_user_link(session, actor, data.user_id, None)
        await _unique_employee_number(session, data.employee_number, None)

    await recheck()
    driver = Driver(**data.model_dump())
    return await toolkit.create(session, actor, driver, entity=ENTITY, recheck=recheck)


async def get_driver(
    *, session: AsyncSession, actor: Actor, driver_id: uuid.UUID, for_update: bool = False
) -> Driver:
    """A driver the actor may see (`for_update`: locked until commit)."""
    driver = await toolkit.get(session, actor, Driver, driver_id, entity=ENTITY)
    await visibility.check_visible(session, actor, Driver, driver_id, ENTITY)
    if for_update:
        await toolkit.lock(session, driver)
    return driver


async def update_driver(
    *,
    session: AsyncSession,
    actor: Actor,
    driver_id: uuid.UUID,
    data: DriverUpdate,
    if_match: IfMatch | None,
) -> Driver:
    driver = await toolkit.get(session, actor, Driver, driver_id, entity=ENTITY)
    changes = data.model_dump(exclude_unset=True)
    for key, value in changes.items():
        if value is None and key not in NULLABLE:
            raise Invalid(key, f"{key} cannot be null")

    async def recheck() -> None:
        if "user_id" in changes:
            await _check_user_link(session, actor, changes["user_id"], driver.id)
        if "employee_number" in changes:
            await _unique_employee_number(session, changes["employee_number"], driver.id)

    # The checks first: one may audit a cross-tenant probe, which must not wait on our lock.
    await recheck()
    await toolkit.lock(session, driver)
    return await toolkit.update(
        session, actor, driver, changes, entity=ENTITY, if_match=if_match, recheck=recheck
    )
