"""Drivers as a REST resource: the declarative CRUD checks of the test kit."""

from __future__ import annotations

from ctafleet.fleet.drivers import routes as driver_routes
from tests.kit.crud import CrudCase
from tests.kit.factories import driver_body


class TestDrivers(CrudCase):
    path = "/api/v1/drivers"
    entity = "driver"
    body = staticmethod(driver_body)
    change = {"phone": "+1 312 555 0100", "licence_class": "CDL-B"}
    readers = {"admin", "fleet_manager", "dispatcher", "driver", "viewer", "auditor"}
    writers = {"admin", "fleet_manager"}
    own_records = {"driver"}
    sort_fields = tuple(driver_routes.SORTING.fields)
