"""Vehicles as a REST resource: the declarative CRUD checks of the test kit."""

from __future__ import annotations

from ctafleet.fleet.vehicles import routes as vehicle_routes
from tests.kit.crud import ALL_ROLES, CrudCase
from tests.kit.factories import vehicle_body


class TestVehicles(CrudCase):
    path = "/api/v1/vehicles"
    entity = "vehicle"
    body = staticmethod(vehicle_body)
    change = {"notes": "moved to the north yard", "department": "Parks"}
    readers = set(ALL_ROLES)
    writers = {"admin", "fleet_manager"}
    own_records = {"driver"}
    sort_fields = tuple(vehicle_routes.SORTING.fields)
