"""Devices as a REST resource: the declarative CRUD checks of the test kit."""

from __future__ import annotations

from ctafleet.telematics import routes as device_routes
from tests.kit.crud import CrudCase
from tests.kit.factories import device_body


class TestDevices(CrudCase):
    path = "/api/v1/devices"
    entity = "device"
    body = staticmethod(device_body)
    change = {"name": "Tracker, van 12", "protocol": "json"}
    readers = {"admin", "fleet_manager", "dispatcher", "mechanic", "viewer", "auditor"}
    writers = {"admin", "fleet_manager"}
    sort_fields = tuple(device_routes.SORTING.fields)
