"""Request bodies and objects made through the API, in one place."""

from __future__ import annotations

import random
import uuid
from typing import Any

from ctafleet.demo import make_vin
from tests.kit.app import Api, TenantUsers

VALID_VINS = ["1M8GDM9AXKP042788", "11111111111111111", "1HGCM82633A004352", "5YJSA1E10HF000316"]


def _n(n: int | None) -> int:
    return n if n is not None else random.randint(0, 10**9)


def vehicle_body(n: int | None = None, **overrides: Any) -> dict[str, Any]:
    n = _n(n)
    body = {
        "unit_number": f"U-{n}",
        "vin": make_vin(random.Random(n)),
        "plate": f"P{n % 10**8}",
        "plate_jurisdiction": "US-IL",
        "make": "Ford",
        "model": "Transit",
        "year": 2022,
        "vehicle_type": "van",
        "fuel_type": "gasoline",
        "odometer_m": 1000,
    }
    body.update(overrides)
    return body


def geofence_body(**overrides: Any) -> dict[str, Any]:
    """A circle of 100 m (names are unique per tenant: a fresh one each time)."""
    body: dict[str, Any] = {
        "name": f"Depot {uuid.uuid4().hex[:8]}",
        "geometry": {"type": "Point", "coordinates": [-87.63, 41.88]},
        "radius_m": 100.0,
    }
    return {**body, **overrides}


def driver_body(n: int | None = None, **overrides: Any) -> dict[str, Any]:
    n = _n(n)
    body = {
        "first_name": "Ada",
        "last_name": f"Driver{n}",
        "employee_number": f"E{n}",
        "licence_number": f"L{n}",
        "licence_class": "D",
        "licence_jurisdiction": "US-IL",
        "licence_expiry": "2030-01-01",
    }
    body.update(overrides)
    return body


def device_body(n: int | None = None, **overrides: Any) -> dict[str, Any]:
    body = {"unique_id": f"dev-{_n(n)}", "name": "Tracker", "protocol": "osmand"}
    body.update(overrides)
    return body


def user_body(n: int | None = None, **overrides: Any) -> dict[str, Any]:
    body = {
        "email": f"user{_n(n)}@{uuid.uuid4().hex[:8]}.example.org",
        "full_name": "Grace Operator",
        "role": "viewer",
        "password": "Correct-Horse-Battery-7",
    }
    body.update(overrides)
    return body


async def _post(api: Api, t: TenantUsers, path: str, body: dict[str, Any], role: str) -> Any:
    r = await api.client.post(path, json=body, headers=t.headers(role))
    assert r.status_code == 201, r.text
    return r.json()


async def new_vehicle(
    api: Api, t: TenantUsers, role: str = "admin", **overrides: Any
) -> dict[str, Any]:
    data: dict[str, Any] = await _post(api, t, "/api/v1/vehicles", vehicle_body(**overrides), role)
    return data


async def new_driver(
    api: Api, t: TenantUsers, role: str = "admin", **overrides: Any
) -> dict[str, Any]:
    data: dict[str, Any] = await _post(api, t, "/api/v1/drivers", driver_body(**overrides), role)
    return data


async def new_device(
    api: Api, t: TenantUsers, role: str = "admin", **overrides: Any
) -> dict[str, Any]:
    data: dict[str, Any] = await _post(api, t, "/api/v1/devices", device_body(**overrides), role)
    return data


async def new_assignment(
    api: Api, t: TenantUsers, role: str = "admin", **overrides: Any
) -> dict[str, Any]:
    body = dict(overrides)
    if "vehicle_id" not in body:
        body["vehicle_id"] = (await new_vehicle(api, t))["id"]
    if "driver_id" not in body:
        body["driver_id"] = (await new_driver(api, t))["id"]
    body.setdefault("starts_at", "2025-06-01T08:00:00Z")
    data: dict[str, Any] = await _post(api, t, "/api/v1/assignments", body, role)
    return data


async def audit_events(
    api: Api, t: TenantUsers, entity_type: str, entity_id: str | uuid.UUID, role: str = "admin"
) -> list[dict[str, Any]]:
    """The entity's audit events, oldest first."""
    r = await api.client.get(
        "/api/v1/audit-events",
        params={
            "entity_type": entity_type,
            "entity_id": str(entity_id),
            "sort": "occurred_at",
            "limit": 500,
        },
        headers=t.headers(role),
    )
    assert r.status_code == 200, r.text
    events: list[dict[str, Any]] = r.json()["data"]
    return events


async def audit_actions(
    api: Api, t: TenantUsers, entity_type: str, entity_id: str | uuid.UUID
) -> list[str]:
    return [e["action"] for e in await audit_events(api, t, entity_type, entity_id)]
