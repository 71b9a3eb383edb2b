"""Another tenant's objects: 404 on every id-bearing route, each probe audited, nothing changed.

The routes are enumerated from the app, so a new `/{thing_id}` route fails here until it is given
a mapping to an object of the other tenant (and, if it takes a body, a valid body for it).
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from fastapi.routing import APIRoute

from ctafleet.auth.deps import permission_of
from ctafleet.auth.permissions import Permission
from tests.kit.app import Api, TenantUsers, app_routes
from tests.kit.factories import driver_body, geofence_body, vehicle_body

PARAM = re.compile(r"{([^}:]+)(?::[^}]*)?}")

# Valid bodies, by request model, so the call passes validation and reaches the tenant check.
BODIES: dict[str, dict[str, Any]] = {
    "VehicleUpdate": {"notes": "probe"},
    "MeterReading": {"odometer_m": 9_000_000},
    "DriverUpdate": {"first_name": "Probe"},
    "AssignmentUpdate": {"notes": "probe"},
    "DeviceUpdate": {"name": "probe"},
    "UserUpdate": {"full_name": "Probe"},
    "GeofenceUpdate": {"name": "probe"},
}

# Where B's current state is read back from, per path parameter.
READ_BACK = {
    "vehicle_id": "/api/v1/vehicles/{}",
    "driver_id": "/api/v1/drivers/{}",
    "assignment_id": "/api/v1/assignments/{}",
    "device_id": "/api/v1/devices/{}",
    "user_id": "/api/v1/users/{}",
    "geofence_id": "/api/v1/geofences/{}",
}


async def _create_b_objects(api: Api, b: TenantUsers) -> dict[str, str]:
    h = b.headers()
    r = await api.client.post("/api/v1/vehicles", json=vehicle_body(), headers=h)
    assert r.status_code == 201, r.text
    vehicle = r.json()["id"]
    r = await api.client.post("/api/v1/drivers", json=driver_body(), headers=h)
    assert r.status_code == 201, r.text
    driver = r.json()["id"]
    r = await api.client.post(
        "/api/v1/assignments",
        json={"vehicle_id": vehicle, "driver_id": driver, "starts_at": "2025-06-01T08:00:00Z"},
        headers=h,
    )
    assert r.status_code == 201, r.text
    assignment = r.json()["id"]
    r = await api.client.post(
        "/api/v1/devices",
        json={
            "unique_id": f"probe-{uuid.uuid4().hex[:12]}",
            "name": "B tracker",
            "protocol": "osmand",
            "vehicle_id": vehicle,
        },
        headers=h,
    )
    assert r.status_code == 201, r.text
    device = r.json()["id"]
    r = await api.client.post("/api/v1/geofences", json=geofence_body(), headers=h)
    assert r.status_code == 201, r.text
    geofence = r.json()["id"]
    return {
        "vehicle_id": vehicle,
        "driver_id": driver,
        "assignment_id": assignment,
        "device_id": device,
        "user_id": str(b.users["admin"].id),
        "geofence_id": geofence,
    }


async def _snapshot(api: Api, b: TenantUsers, ids: dict[str, str]) -> dict[str, Any]:
    out = {}
    for param, template in READ_BACK.items():
        r = await api.client.get(template.format(ids[param]), headers=b.headers())
        assert r.status_code == 200, r.text
        out[param] = r.json()
    return out


def _id_routes(api: Api) -> list[tuple[str, str, APIRoute]]:
    routes = []
    for info in app_routes(api.app):
        if "{" not in info.path:
            continue
        assert isinstance(info.route, APIRoute), f"{info.path}: not an API route; extend this test"
        if permission_of(info.route) is Permission.public:
            continue  # single sign-on's start names an organisation, not an object of one
        for method in sorted(info.methods - {"HEAD", "OPTIONS"}):
            routes.append((method, info.path, info.route))
    return routes


def _body_for(route: APIRoute) -> dict[str, Any] | None:
    if route.body_field is None:
        return None
    annotation = route.body_field.field_info.annotation
    assert annotation is not None
    name = annotation.__name__
    assert name in BODIES, f"{route.path}: give a valid {name} body in BODIES"
    return BODIES[name]


async def test_every_id_route_hides_other_tenants_objects(api: Api) -> None:
    a = await api.tenant(roles=["admin"])
    b = await api.tenant(roles=["admin"])
    ids = await _create_b_objects(api, b)
    before = await _snapshot(api, b, ids)

    routes = _id_routes(api)
    assert len(routes) >= 10, routes  # the enumeration itself works
    probed: list[tuple[str, str]] = []
    for method, path, route in routes:
        params = PARAM.findall(path)
        unknown = [p for p in params if p not in ids]
        assert not unknown, f"{method} {path}: map {unknown} to an object of tenant B"
        url = PARAM.sub(lambda m: ids[m.group(1)], path)
        body = _body_for(route)
        r = await api.client.request(
            method, url, headers=a.headers(), json=body if body is not None else None
        )
        assert r.status_code == 404, f"{method} {path}: {r.status_code} {r.text}"
        assert r.headers["content-type"] == "application/problem+json", (method, path)
        problem = r.json()
        assert problem["type"] == "/problems/not-found", (method, path, problem)
        assert problem["request_id"] == r.headers["x-request-id"]
        # Nothing of B leaks into the answer beyond the echoed request path.
        told = {k: v for k, v in problem.items() if k != "instance"}
        assert not any(v in str(told) for v in ids.values()), (method, path, problem)
        probed.extend((method, ids[p]) for p in params)

    # The probed organisation sees each attempt in its own audit log; the prober's log does not.
    r = await api.client.get(
        "/api/v1/audit-events",
        params={"action": "cross_tenant_access_denied", "limit": 500},
        headers=b.headers(),
    )
    assert r.status_code == 200, r.text
    events = r.json()["data"]
    assert len(events) >= len(probed), (len(events), len(probed))
    assert {e["entity_id"] for e in events} == set(ids.values())
    a_user = str(a.users["admin"].id)
    assert all(e["actor_user_id"] == a_user for e in events)
    assert all(e["changes"]["actor_tenant_id"]["after"] == str(a.id) for e in events)
    r = await api.client.get(
        "/api/v1/audit-events",
        params={"action": "cross_tenant_access_denied"},
        headers=a.headers(),
    )
    assert r.json()["data"] == []

    assert await _snapshot(api, b, ids) == before


async def test_references_to_other_tenants_objects_are_404(api: Api) -> None:
    """Ids of another tenant inside a body or a filter are as invisible as in a path."""
    a = await api.tenant(roles=["admin"])
    b = await api.tenant(roles=["admin"])
    ids = await _create_b_objects(api, b)
    h = a.headers()

    r = await api.client.post("/api/v1/vehicles", json=vehicle_body(), headers=h)
    own_vehicle = r.json()["id"]
    r = await api.client.post("/api/v1/drivers", json=driver_body(), headers=h)
    own_driver = r.json()["id"]

    attempts = [
        (
            "POST",
            "/api/v1/assignments",
            {
                "vehicle_id": ids["vehicle_id"],
                "driver_id": own_driver,
                "starts_at": "2025-06-01T08:00:00Z",
            },
        ),
        (
            "POST",
            "/api/v1/assignments",
            {
                "vehicle_id": own_vehicle,
                "driver_id": ids["driver_id"],
                "starts_at": "2025-06-01T08:00:00Z",
            },
        ),
        (
            "POST",
            "/api/v1/devices",
            {
                "unique_id": f"x-{uuid.uuid4().hex[:12]}",
                "name": "x",
                "protocol": "osmand",
                "vehicle_id": ids["vehicle_id"],
            },
        ),
        ("POST", "/api/v1/drivers", driver_body(user_id=ids["user_id"])),
    ]
    r = await api.client.post(
        "/api/v1/devices",
        json={"unique_id": f"a-{uuid.uuid4().hex[:12]}", "name": "a", "protocol": "json"},
        headers=h,
    )
    own_device = r.json()["id"]
    attempts += [
        ("PATCH", f"/api/v1/devices/{own_device}", {"vehicle_id": ids["vehicle_id"]}),
        ("PATCH", f"/api/v1/drivers/{own_driver}", {"user_id": ids["user_id"]}),
    ]
    for method, url, body in attempts:
        r = await api.client.request(method, url, json=body, headers=h)
        assert r.status_code == 404, (url, body, r.status_code, r.text)
        assert r.headers["content-type"] == "application/problem+json"

    # Nothing was created or re-pointed by the refused requests.
    r = await api.client.get(f"/api/v1/devices/{own_device}", headers=h)
    assert r.json()["vehicle_id"] is None
    r = await api.client.get(f"/api/v1/drivers/{own_driver}", headers=h)
    assert r.json()["user_id"] is None
    r = await api.client.get("/api/v1/assignments", headers=h)
    assert r.json()["data"] == []
    for url, key in (
        ("/api/v1/assignments", "vehicle_id"),
        ("/api/v1/assignments", "driver_id"),
        ("/api/v1/devices", "vehicle_id"),
    ):
        r = await api.client.get(url, params={key: ids[key]}, headers=h)
        assert r.status_code == 200, r.text
        assert r.json()["data"] == [], (url, key)
    for url in ("/api/v1/vehicles", "/api/v1/drivers", "/api/v1/users", "/api/v1/devices"):
        r = await api.client.get(url, params={"limit": 500}, headers=h)
        assert not set(ids.values()) & {row["id"] for row in r.json()["data"]}, url
