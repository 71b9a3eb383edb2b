"""Geofences: the REST resource (CRUD, validation, roles, tenancy, GeoJSON export), and a
geofence made through the API turning a drive into enter and exit events."""

from __future__ import annotations

import math
import uuid
from datetime import timedelta
from typing import Any

import pytest

from ctafleet.telematics.derive.geo import destination
from ctafleet.telematics.geofences import routes as geofence_routes
from ctafleet.telematics.geofences.service import MAX_VERTICES
from tests.kit.app import Api, TenantUsers
from tests.kit.crud import CrudCase
from tests.kit.factories import new_vehicle
from tests.kit.problems import assert_problem
from tests.telematics.derive.kit import Drive
from tests.telematics.ingest.kit import device
from tests.telematics.test_derived import derived, send

pytestmark = pytest.mark.asyncio

URL = "/api/v1/geofences"
HOME = (41.88, -87.63)


def square(lat: float, lon: float, half_deg: float = 0.01) -> dict[str, Any]:
    ring = [
        [lon - half_deg, lat - half_deg],
        [lon + half_deg, lat - half_deg],
        [lon + half_deg, lat + half_deg],
        [lon - half_deg, lat + half_deg],
        [lon - half_deg, lat - half_deg],
    ]
    return {"type": "Polygon", "coordinates": [ring]}


def geofence_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": f"Depot {uuid.uuid4().hex[:8]}",
        "geometry": square(*HOME),
        "speed_limit_mps": 8.0,
    }
    body.update(overrides)
    return body


class TestGeofences(CrudCase):
    path = URL
    entity = "geofence"
    body = staticmethod(geofence_body)
    change = {"name": "North yard", "dwell_s": 900.0}
    readers = {"admin", "fleet_manager", "dispatcher", "mechanic", "viewer", "auditor"}
    writers = {"admin", "fleet_manager"}
    sort_fields = tuple(geofence_routes.SORTING.fields)

    async def new_body(self, api: Api, t: TenantUsers) -> dict[str, Any]:
        return geofence_body()


async def test_a_circle_is_a_point_with_a_radius_and_may_become_a_polygon(api: Api) -> None:
    t = await api.tenant(roles=["admin"])
    body = geofence_body(
        geometry={"type": "Point", "coordinates": [HOME[1], HOME[0]]},
        radius_m=250.0,
        schedule={
            "timezone": "America/Chicago",
            "windows": [{"days": ["mon", "tue", "wed", "thu", "fri"], "start": "07:00",
                         "end": "19:00"}],
        },
    )  # fmt: skip
    r = await api.client.post(URL, json=body, headers=t.headers())
    assert r.status_code == 201, r.text
    circle = r.json()
    assert circle["kind"] == "circle"
    assert circle["geometry"] == {"type": "Point", "coordinates": [HOME[1], HOME[0]]}
    assert circle["radius_m"] == 250.0
    assert circle["schedule"]["timezone"] == "America/Chicago"
    r = await api.client.patch(
        f"{URL}/{circle['id']}",
        json={"geometry": square(*HOME)},
        headers={**t.headers(), "If-Match": f'"v{circle["version"]}"'},
    )
    assert r.status_code == 200, r.text
    assert (r.json()["kind"], r.json()["radius_m"]) == ("polygon", None)
    # Clearing optional settings is allowed; the name is not optional.
    r = await api.client.patch(
        f"{URL}/{circle['id']}", json={"schedule": None}, headers=t.headers()
    )
    assert r.status_code == 200, r.text
    assert r.json()["schedule"] is None
    r = await api.client.patch(f"{URL}/{circle['id']}", json={"name": None}, headers=t.headers())
    assert_problem(r, 422, "validation-error")
    r = await api.client.patch(
        f"{URL}/{circle['id']}",
        json={"geometry": {"type": "Point", "coordinates": [HOME[1], HOME[0]]}},
        headers=t.headers(),
    )
    assert_problem(r, 422, "validation-error")  # a circle again, but with no radius


def _bowtie() -> dict[str, Any]:
    lat, lon = HOME
    ring = [[lon, lat], [lon + 0.01, lat + 0.01], [lon + 0.01, lat], [lon, lat + 0.01], [lon, lat]]
    return {"type": "Polygon", "coordinates": [ring]}


def _many_vertices(n: int) -> dict[str, Any]:
    angles = [2 * math.pi * i / n for i in range(n)]
    ring = [[HOME[1] + 0.01 * math.cos(a), HOME[0] + 0.01 * math.sin(a)] for a in angles]
    return {"type": "Polygon", "coordinates": [[*ring, ring[0]]]}


@pytest.mark.parametrize(
    ("overrides", "slug", "field"),
    [
        ({"geometry": {"type": "Polygon", "coordinates": [square(*HOME)["coordinates"][0][:-1]]}},
         "invalid-geometry", "geometry.coordinates.0"),
        ({"geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [0, 0]]]}},
         "invalid-geometry", "geometry.coordinates.0"),
        ({"geometry": _bowtie()}, "invalid-geometry", "geometry"),
        ({"geometry": square(89.999, 10.0, 0.01)}, "invalid-geometry",
         "geometry.coordinates.0.2"),
        ({"geometry": _many_vertices(MAX_VERTICES + 1)}, "invalid-geometry",
         "geometry.coordinates"),
        ({"geometry": {"type": "Point", "coordinates": [HOME[1], HOME[0]]}}, "validation-error",
         "radius_m"),
        ({"radius_m": 100.0}, "validation-error", "radius_m"),
        ({"geometry": {"type": "Point", "coordinates": [200.0, 0.0]}, "radius_m": 5.0},
         "invalid-geometry", "geometry.coordinates"),
        ({"geometry": {"type": "LineString", "coordinates": [[0, 0], [1, 1]]}},
         "validation-error", None),
        ({"speed_limit_mps": -1}, "validation-error", None),
        ({"schedule": {"timezone": "Mars/Olympus", "windows": [
            {"days": ["mon"], "start": "07:00", "end": "09:00"}]}}, "validation-error",
         "schedule"),
        ({"schedule": {"timezone": "UTC", "windows": [
            {"days": ["mon"], "start": "25:00", "end": "09:00"}]}}, "validation-error", None),
        ({"name": ""}, "validation-error", None),
    ],
)  # fmt: skip
async def test_invalid_geofences_are_refused_with_the_reason(
    api: Api, overrides: dict[str, Any], slug: str, field: str | None
) -> None:
    t = await api.tenant(roles=["admin"])
    r = await api.client.post(URL, json=geofence_body(**overrides), headers=t.headers())
    problem = assert_problem(r, 422, slug)
    if field is not None:
        assert problem["errors"][0]["loc"] == ["body", *field.split(".")], problem
    assert (await api.client.get(URL, headers=t.headers())).json()["data"] == []


async def test_names_are_unique_in_a_tenant_and_delete_needs_a_current_etag(api: Api) -> None:
    t = await api.tenant(roles=["admin", "viewer"])
    other = await api.tenant(roles=["admin"])
    body = geofence_body()
    first = (await api.client.post(URL, json=body, headers=t.headers())).json()
    assert_problem(await api.client.post(URL, json=body, headers=t.headers()), 409)
    r = await api.client.post(URL, json=body, headers=other.headers())
    assert r.status_code == 201, r.text  # another tenant's names are not in the way
    url = f"{URL}/{first['id']}"
    assert_problem(await api.client.delete(url, headers=other.headers()), 404, "not-found")
    assert_problem(await api.client.delete(url, headers=t.headers("viewer")), 403, "forbidden")
    r = await api.client.patch(url, json={"active": False}, headers=t.headers())
    assert r.status_code == 200, r.text
    stale = {**t.headers(), "If-Match": f'"v{first["version"]}"'}
    assert_problem(await api.client.delete(url, headers=stale), 412, "precondition-failed")
    current = {**t.headers(), "If-Match": r.headers["etag"]}
    assert (await api.client.delete(url, headers=current)).status_code == 204
    assert_problem(await api.client.get(url, headers=t.headers()), 404, "not-found")


async def test_the_geojson_export_holds_the_tenants_geofences(api: Api) -> None:
    t = await api.tenant(roles=["admin", "viewer", "driver"])
    other = await api.tenant(roles=["admin"])
    await api.client.post(URL, json=geofence_body(name="B depot"), headers=t.headers())
    circle = geofence_body(
        name="A gate", geometry={"type": "Point", "coordinates": [-87.6, 41.9]}, radius_m=50.0
    )
    await api.client.post(URL, json=circle, headers=t.headers())
    await api.client.post(URL, json=geofence_body(), headers=other.headers())
    r = await api.client.get(f"{URL}.geojson", headers=t.headers("viewer"))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/geo+json"
    collection = r.json()
    assert collection["type"] == "FeatureCollection"
    assert [f["properties"]["name"] for f in collection["features"]] == ["A gate", "B depot"]
    gate, depot = collection["features"]
    assert gate["geometry"] == {"type": "Point", "coordinates": [-87.6, 41.9]}
    assert gate["properties"]["radius_m"] == 50.0
    assert depot["geometry"]["type"] == "Polygon"
    assert depot["properties"]["speed_limit_mps"] == 8.0
    assert_problem(await api.client.get(f"{URL}.geojson", headers=t.headers("driver")), 403)


async def test_a_geofence_made_through_the_api_yields_enter_and_exit_events(api: Api) -> None:
    t = await api.tenant(roles=["admin"])
    # A box of 0.0036 degrees (400 m north-south) 1 km east of the start, where the limit is 8 m/s.
    centre = destination(*HOME, 90.0, 1200.0)
    half = 200.0 / 111_320
    r = await api.client.post(
        URL, json=geofence_body(geometry=square(*centre, half)), headers=t.headers()
    )
    assert r.status_code == 201, r.text
    zone = r.json()
    vehicle = await new_vehicle(api, t)
    dev = await device(api, t, vehicle_id=vehicle["id"])
    d = Drive(lat=HOME[0], lon=HOME[1], t=api.clock.now() - timedelta(hours=2))
    d.park(seconds=60, every_s=30)
    d.drive(seconds=150, speed=15.0, bearing=90.0, every_s=2)
    d.park(seconds=600, every_s=30)
    await send(api, dev["credential"], d.points)

    got = await derived(api, dev["id"], dev["unique_id"])
    zoned = [e for e in got["events"] if e["geofence_id"] is not None]
    assert [e["type"] for e in zoned] == ["geofence_enter", "geofence_exit"]
    assert {str(e["geofence_id"]) for e in zoned} == {zone["id"]}
    # The box is 400 m east-west times cos(latitude), crossed at 15 m/s.
    width_m = 400.0 * math.cos(math.radians(centre[0]))
    assert zoned[1]["duration_s"] == pytest.approx(width_m / 15, abs=3)
    # Inside, 15 m/s is above the zone's 8 m/s: one overspeed event for the crossing.
    [overspeed] = [e for e in got["events"] if e["type"] == "overspeed"]
    assert overspeed["limit"] == 8.0
    assert zoned[0]["time"] <= overspeed["time"] <= zoned[1]["time"]

    # A deactivated geofence no longer counts: the same drive the next day crosses nothing.
    r = await api.client.patch(f"{URL}/{zone['id']}", json={"active": False}, headers=t.headers())
    assert r.status_code == 200, r.text
    again = await device(api, t)
    d = Drive(lat=HOME[0], lon=HOME[1], t=api.clock.now() - timedelta(hours=1))
    d.park(seconds=60, every_s=30)
    d.drive(seconds=150, speed=15.0, bearing=90.0, every_s=2)
    d.park(seconds=600, every_s=30)
    await send(api, again["credential"], d.points)
    got = await derived(api, again["id"], again["unique_id"])
    assert [e for e in got["events"] if e["geofence_id"] is not None] == []
