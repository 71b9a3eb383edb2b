"""Lists are read as plain rows and rendered straight to JSON: the bytes must be exactly those
pydantic renders from the same objects through the documented read schema."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from pydantic import BaseModel
from sqlalchemy import select

from ctafleet.api.pagination import Page, PageInfo
from ctafleet.audit.schemas import AuditEventRead
from ctafleet.auth.models import User
from ctafleet.auth.schemas import UserRead
from ctafleet.db.audit import AuditEvent
from ctafleet.fleet.assignments.models import Assignment
from ctafleet.fleet.assignments.schemas import AssignmentRead
from ctafleet.fleet.drivers.models import Driver
from ctafleet.fleet.drivers.schemas import DriverRead
from ctafleet.fleet.vehicles.models import Vehicle
from ctafleet.fleet.vehicles.schemas import VehicleRead
from ctafleet.telematics.models import Device
from ctafleet.telematics.schemas import DeviceRead
from tests.kit.app import Api
from tests.kit.factories import new_assignment, new_device, new_vehicle

LISTS: list[tuple[str, type[Any], type[BaseModel]]] = [
    ("/api/v1/vehicles", Vehicle, VehicleRead),
    ("/api/v1/drivers", Driver, DriverRead),
    ("/api/v1/assignments", Assignment, AssignmentRead),
    ("/api/v1/devices", Device, DeviceRead),
    ("/api/v1/users", User, UserRead),
    ("/api/v1/audit-events", AuditEvent, AuditEventRead),
]


@pytest.mark.parametrize(("path", "model", "schema"), LISTS)
async def test_fast_lists_render_what_the_schema_renders(
    api: Api, path: str, model: type[Any], schema: type[BaseModel]
) -> None:
    t = await api.tenant(roles=["admin"])
    # Values at the edges of the formats: nulls, floats, dates, microseconds, nested JSON.
    await new_vehicle(
        api, t, tank_capacity_l=75.5, home_lat=41.878113, home_lon=-87.6298, notes='a\nb "c"'
    )
    await new_vehicle(api, t, purchase_cost_minor=4599900, purchase_currency="EUR")
    await new_assignment(api, t, ends_at="2025-06-01T17:30:00.250000Z")
    await new_device(api, t)
    r = await api.client.get(path, params={"limit": 3}, headers=t.headers())
    assert r.status_code == 200, r.text
    ids = [uuid.UUID(x["id"]) for x in r.json()["data"]]
    assert ids
    async with api.db.session(t.actor()) as session:
        rows = {o.id: o for o in (await session.scalars(select(model).where(model.id.in_(ids))))}
    named = {u.id: u for u in t.users.values()}

    def read(obj: Any) -> BaseModel:
        if schema is not AuditEventRead:
            return schema.model_validate(obj)
        user = named.get(obj.actor_user_id)
        return schema.model_validate(obj).model_copy(
            update={
                "actor_email": user.email if user else None,
                "actor_name": user.full_name if user else None,
            }
        )

    expected = Page[schema](  # type: ignore[valid-type]
        data=[read(rows[i]) for i in ids],
        pagination=PageInfo.model_validate(r.json()["pagination"]),
    )
    assert r.content == expected.model_dump_json().encode()
