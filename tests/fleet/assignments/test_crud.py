"""Assignments as a REST resource: the declarative CRUD checks of the test kit."""

from __future__ import annotations

import itertools
from typing import Any

from tests.kit.app import Api, TenantUsers
from tests.kit.crud import CrudCase
from tests.kit.factories import new_driver, new_vehicle

_day = itertools.count(1)


class TestAssignments(CrudCase):
    path = "/api/v1/assignments"
    entity = "assignment"
    change = {"notes": "covers the night shift"}
    readers = {"admin", "fleet_manager", "dispatcher", "driver", "viewer", "auditor"}
    writers = {"admin", "fleet_manager", "dispatcher"}
    own_records = {"driver"}
    sort_fields = ("starts_at", "created_at")

    async def new_body(self, api: Api, t: TenantUsers) -> dict[str, Any]:
        day = next(_day) % 28 + 1
        return {
            "vehicle_id": (await new_vehicle(api, t))["id"],
            "driver_id": (await new_driver(api, t))["id"],
            "starts_at": f"2024-02-{day:02d}T08:00:00Z",
        }
