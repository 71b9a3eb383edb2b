"""Assignments: a driver on a vehicle for a period; never two at once for either."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Select, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from ctafleet.db import toolkit
from ctafleet.db.toolkit import IfMatch
from ctafleet.fleet import visibility
from ctafleet.fleet.assignments.models import Assignment
from ctafleet.fleet.assignments.schemas import AssignmentCreate, AssignmentUpdate
from ctafleet.fleet.drivers.service import get_driver
from ctafleet.fleet.vehicles.service import get_vehicle
from ctafleet.kernel.context import Actor
from ctafleet.kernel.errors import Conflict, Invalid

ENTITY = "assignment"


def assignments_query(
    *,
    vehicle_id: uuid.UUID | None = None,
    driver_id: uuid.UUID | None = None,
    active_at: datetime | None = None,
) -> Select[Assignment]:
    stmt = select(Assignment)
    if vehicle_id:
        stmt = stmt.where(Assignment.vehicle_id == vehicle_id)
    if driver_id:
        stmt = stmt.where(Assignment.driver_id == driver_id)
    if active_at:
        stmt = stmt.where(visibility.active_at(active_at))
    return stmt


async def list_query(*, session: AsyncSession, actor: Actor, **filters: Any) -> Select[Assignment]:
    return await visibility.restrict(session, actor, assignments_query(**filters), Assignment)


def _overlapping(
    column: Any,
    value: uuid.UUID,
    starts: datetime,
    ends: datetime | None,
    exclude: uuid.UUID | None,
) -> Select[Assignment]:
    stmt = select(Assignment).where(
        column == value,
        or_(Assignment.ends_at.is_(None), Assignment.ends_at > starts),
    )
    if ends is not None:
        stmt = stmt.where(Assignment.starts_at < ends)
    if exclude is not None:
        stmt = stmt.where(Assignment.id != exclude)
    return stmt.limit(1)


async def _check_overlap(
    session: AsyncSession,
    vehicle_id: uuid.UUID,
    driver_id: uuid.UUID,
    starts: datetime,
    ends: datetime | None,
    exclude: uuid.UUID | None = None,
) -> None:
    for column, value, what in (
        (Assignment.vehicle_id, vehicle_id, "vehicle"),
        (Assignment.driver_id, driver_id, "driver"),
    ):
        clash = (await session.scalars(_overlapping(column, value, starts, ends, exclude))).first()
        if clash is not None:
            raise Conflict(
                "assignment-overlap",
                f"the {what} already has an assignment in that period",
                conflicting_assignment_id=str(clash.id),
            )


async def _lock_ends(
    session: AsyncSession, actor: Actor, vehicle_id: uuid.UUID, driver_id: uuid.UUID
) -> tuple[Any, Any]:
    # Locks on both ends serialise concurrent assignments of the same vehicle or driver;
    # always vehicle first, then driver, so two requests never wait on each other in a cycle.
    # Both reads come first: either may audit a cross-tenant probe, which must not wait on a
    # lock this transaction holds.
    vehicle = await get_vehicle(session=session, actor=actor, vehicle_id=vehicle_id)
    driver = await get_driver(session=session, actor=actor, driver_id=driver_id)
    await toolkit.lock(session, vehicle)
    await toolkit.lock(session, driver)
    return vehicle, driver


async def create_assignment(
    *, session: AsyncSession, actor: Actor, data: AssignmentCreate
) -> Assignment:
    vehicle, driver = await _lock_ends(session, actor, data.vehicle_id, data.driver_id)
    if vehicle.status == "retired":
        raise Conflict("vehicle-retired", "a retired vehicle cannot be assigned")
    if driver.status != "active":
        raise Conflict("driver-not-active", f"the driver is {driver.status}")
    await _check_overlap(session, vehicle.id, driver.id, data.starts_at, data.ends_at)
    return await toolkit.create(session, actor, Assignment(**data.model_dump()), entity=ENTITY)


async def get_assignment(
    *, session: AsyncSession, actor: Actor, assignment_id: uuid.UUID
) -> Assignment:
    assignment = await toolkit.get(session, actor, Assignment, assignment_id, entity=ENTITY)
    await visibility.check_visible(session, actor, Assignment, assignment_id, ENTITY)
    return assignment


async def update_assignment(
    *,
    session: AsyncSession,
    actor: Actor,
    assignment_id: uuid.UUID,
    data: AssignmentUpdate,
    if_match: IfMatch | None,
) -> Assignment:
    assignment = await toolkit.get(session, actor, Assignment, assignment_id, entity=ENTITY)
    changes = data.model_dump(exclude_unset=True)
    if "notes" in changes and changes["notes"] is None:
        raise Invalid("notes", "notes cannot be null")
    # The assignment first, then (as in create) its vehicle and driver.
    await toolkit.lock(session, assignment)
    toolkit.check_version(assignment.version, if_match)
    if "ends_at" in changes:
        ends = changes["ends_at"]
        if ends is not None and ends <= assignment.starts_at:
            raise Invalid("ends_at", "ends_at must be after starts_at")
        await _lock_ends(session, actor, assignment.vehicle_id, assignment.driver_id)
        await _check_overlap(
            session,
            assignment.vehicle_id,
            assignment.driver_id,
            assignment.starts_at,
            ends,
            exclude=assignment.id,
        )
    return await toolkit.update(
        session, actor, assignment, changes, entity=ENTITY, if_match=if_match
    )


async def delete_assignment(
    *, session: AsyncSession, actor: Actor, assignment_id: uuid.UUID
) -> None:
    assignment = await toolkit.get(session, actor, Assignment, assignment_id, entity=ENTITY)
    await toolkit.delete(session, actor, assignment, entity=ENTITY)
