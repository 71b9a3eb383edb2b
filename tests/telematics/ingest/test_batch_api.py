"""The JSON batch API (POST /api/v1/telemetry) and the position reads, through the pipeline."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from tests.kit.app import Api, TenantUsers
from tests.kit.factories import new_vehicle
from tests.telematics.ingest.kit import device, drain, last_position, positions

pytestmark = pytest.mark.asyncio

URL = "/api/v1/telemetry"


def _iso(api: Api, offset_s: float) -> str:
    return (api.clock.now() + timedelta(seconds=offset_s)).isoformat().replace("+00:00", "Z")


def _bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


def _track(api: Api, n: int, start_s: float = -3600, **extra: Any) -> list[dict[str, Any]]:
    return [
        {"time": _iso(api, start_s + i), "lat": 52.5 + i * 1e-4, "lon": 13.4, **extra}
        for i in range(n)
    ]


async def test_a_device_sends_a_batch_with_its_credential(api: Api, tenant: TenantUsers) -> None:
    d = await device(api, tenant)
    points = _track(api, 3, speed=12.5, battery=80, ignition=True, attributes={"fuel": 40.5})
    r = await api.client.post(URL, json={"points": points}, headers=_bearer(d["credential"]))
    assert r.status_code == 202, r.text
    assert r.json() == {"accepted": 3, "rejected": []}
    assert await drain(api) == 3
    rows = await positions(api, d["id"])
    assert [round(row.lat or 0, 4) for row in rows] == [52.5, 52.5001, 52.5002]
    assert all(row.speed_mps == 12.5 and row.ignition for row in rows)  # SI: no conversion
    assert rows[0].attributes == {"fuel": 40.5}
    last = await last_position(api, d["id"])
    assert last is not None
    assert last.fix_time == rows[-1].fix_time


async def test_invalid_points_are_reported_and_the_valid_ones_kept(
    api: Api, tenant: TenantUsers
) -> None:
    d = await device(api, tenant)
    points = [
        {"time": _iso(api, -30), "lat": 52.5, "lon": 13.4},
        {"time": _iso(api, -20), "lat": 91, "lon": 13.4},
        {"time": _iso(api, 3600), "lat": 52.5, "lon": 13.4},
        {"time": "yesterday", "lat": 52.5, "lon": 13.4},
        {"time": _iso(api, -10), "lat": 52.5, "lon": 13.4, "speed": -1},
        {"time": _iso(api, -5), "lat": 52.5, "lon": 13.4, "colour": "red"},
        {"time": _iso(api, -1), "lat": 52.6, "lon": 13.5},
    ]
    r = await api.client.post(URL, json={"points": points}, headers=_bearer(d["credential"]))
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["accepted"] == 2
    assert body["rejected"] == [
        {"index": 1, "reason": "bad-coordinates", "field": "lat"},
        {"index": 2, "reason": "future-fix", "field": "time"},
        {"index": 3, "reason": "bad-time", "field": "time"},
        {"index": 4, "reason": "negative", "field": "speed"},
        {"index": 5, "reason": "unknown-field", "field": "colour"},
    ]
    await drain(api)
    assert [(row.lat, row.lon) for row in await positions(api, d["id"])] == [
        (52.5, 13.4),
        (52.6, 13.5),
    ]


async def test_a_device_credential_cannot_send_for_another_device(
    api: Api, tenant: TenantUsers
) -> None:
    a, b = await device(api, tenant), await device(api, tenant)
    r = await api.client.post(
        URL,
        json={"device": b["unique_id"], "points": _track(api, 1)},
        headers=_bearer(a["credential"]),
    )
    assert r.status_code == 400
    assert r.json()["type"] == "/problems/telemetry-device-mismatch"
    point = {**_track(api, 1)[0], "device": b["unique_id"]}
    r = await api.client.post(URL, json={"points": [point]}, headers=_bearer(a["credential"]))
    assert r.status_code == 202
    assert r.json()["rejected"] == [{"index": 0, "reason": "device-mismatch", "field": "device"}]
    await drain(api)
    assert await positions(api, b["id"]) == []


async def test_a_user_sends_for_several_devices_and_unknown_ones_are_rejected(
    api: Api, tenant: TenantUsers
) -> None:
    a, b = await device(api, tenant), await device(api, tenant)
    other = await api.tenant(roles=["admin"])
    foreign = await device(api, other)
    inactive = await device(api, tenant)
    r = await api.client.patch(
        f"/api/v1/devices/{inactive['id']}", json={"is_active": False}, headers=tenant.headers()
    )
    assert r.status_code == 200, r.text
    points = [
        {**_track(api, 1, -50)[0], "device": a["unique_id"]},
        {**_track(api, 1, -40)[0], "device": foreign["unique_id"]},
        {**_track(api, 1, -30)[0], "device": b["unique_id"]},
        {**_track(api, 1, -20)[0], "device": "no-such-device"},
        {**_track(api, 1, -10)[0], "device": inactive["unique_id"]},
        {**_track(api, 1, -5)[0]},
    ]
    r = await api.client.post(URL, json={"points": points}, headers=tenant.headers("fleet_manager"))
    assert r.status_code == 202, r.text
    assert r.json() == {
        "accepted": 2,
        "rejected": [
            {"index": 1, "reason": "unknown-device", "field": "device"},
            {"index": 3, "reason": "unknown-device", "field": "device"},
            {"index": 4, "reason": "unknown-device", "field": "device"},
            {"index": 5, "reason": "missing-device", "field": "device"},
        ],
    }
    await drain(api)
    assert len(await positions(api, a["id"])) == 1
    assert len(await positions(api, b["id"])) == 1
    assert await positions(api, foreign["id"]) == []  # another tenant's id is just unknown


@pytest.mark.parametrize("role", ["viewer", "driver", "mechanic", "dispatcher"])
async def test_a_user_without_telemetry_write_is_refused(
    api: Api, tenant: TenantUsers, role: str
) -> None:
    d = await device(api, tenant)
    point = {**_track(api, 1)[0], "device": d["unique_id"]}
    r = await api.client.post(URL, json={"points": [point]}, headers=tenant.headers(role))
    assert r.status_code == 403, r.text
    await drain(api)
    assert await positions(api, d["id"]) == []


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer ctd_wrong"}, {"Authorization": "Bearer nonsense"}]
)
async def test_no_or_a_wrong_credential_is_a_401(api: Api, headers: dict[str, str]) -> None:
    r = await api.client.post(URL, json={"device": "x", "points": []}, headers=headers)
    assert r.status_code == 401
    assert r.headers["content-type"].startswith("application/problem+json")


@pytest.mark.parametrize(
    ("body", "slug"),
    [
        (b"{not json", "bad-json"),
        (b"[]", "bad-batch"),
        (b'{"points": {}}', "bad-batch"),
        (b'{"points": [], "extra": 1}', "bad-batch"),
        (b'{"device": 17, "points": []}', "bad-device"),
    ],
)
async def test_a_body_that_is_no_batch_is_a_400(
    api: Api, tenant: TenantUsers, body: bytes, slug: str
) -> None:
    d = await device(api, tenant)
    r = await api.client.post(
        URL,
        content=body,
        headers={**_bearer(d["credential"]), "Content-Type": "application/json"},
    )
    assert r.status_code == 400, r.text
    assert r.json()["type"] == f"/problems/telemetry-{slug}"


async def test_more_points_than_allowed_is_a_400_and_nothing_is_queued(
    api: Api, tenant: TenantUsers
) -> None:
    d = await device(api, tenant)
    limit = api.settings.telemetry.max_batch_points
    r = await api.client.post(
        URL,
        json={"points": _track(api, limit + 1, -(limit + 10))},
        headers=_bearer(d["credential"]),
    )
    assert r.status_code == 400
    assert r.json()["type"] == "/problems/telemetry-too-many-points"
    await drain(api)
    assert await positions(api, d["id"]) == []


async def test_ten_thousand_points_in_one_request_are_all_stored(
    api: Api, tenant: TenantUsers
) -> None:
    d = await device(api, tenant)
    points = _track(api, 10_000, -20_000)
    r = await api.client.post(URL, json={"points": points}, headers=_bearer(d["credential"]))
    assert r.status_code == 202
    assert r.json()["accepted"] == 10_000
    assert await drain(api) == 10_000
    assert len(await positions(api, d["id"])) == 10_000


async def test_a_full_queue_is_a_503_with_retry_after_and_nothing_is_lost(
    api: Api, tenant: TenantUsers
) -> None:
    d = await device(api, tenant)
    queue = api.app.state.ctafleet.telemetry.queue
    limit = queue.max_depth
    queue.max_depth = 0
    try:
        r = await api.client.post(
            URL, json={"points": _track(api, 1)}, headers=_bearer(d["credential"])
        )
    finally:
        queue.max_depth = limit
    assert r.status_code == 503
    assert int(r.headers["Retry-After"]) >= 1
    assert r.json()["type"] == "/problems/ingest-queue-full"
    # The device keeps the point and sends it again once the queue drains.
    r = await api.client.post(
        URL, json={"points": _track(api, 1)}, headers=_bearer(d["credential"])
    )
    assert r.status_code == 202
    assert await drain(api) == 1


# --- reads ---------------------------------------------------------------------------------


async def _send(api: Api, credential: str, points: list[dict[str, Any]]) -> None:
    r = await api.client.post(URL, json={"points": points}, headers=_bearer(credential))
    assert r.status_code == 202, r.text
    assert r.json()["rejected"] == []
    await drain(api)


async def test_a_devices_positions_page_through_a_time_range(api: Api, tenant: TenantUsers) -> None:
    d = await device(api, tenant)
    await _send(api, d["credential"], _track(api, 25, -100))
    url = f"/api/v1/devices/{d['id']}/positions"
    params: dict[str, Any] = {"since": _iso(api, -95), "until": _iso(api, -80), "limit": 6}
    seen: list[str] = []
    while True:
        r = await api.client.get(url, params=params, headers=tenant.headers("viewer"))
        assert r.status_code == 200, r.text
        page = r.json()
        seen += [p["fix_time"] for p in page["data"]]
        if page["next_cursor"] is None:
            break
        params["cursor"] = page["next_cursor"]
    assert seen == [_iso(api, -100 + i) for i in range(5, 21)]  # inclusive both ends, no repeat
    r = await api.client.get(
        url, params={"since": _iso(api, 0), "until": _iso(api, -10)}, headers=tenant.headers()
    )
    assert r.status_code == 422
    assert r.json()["type"] == "/problems/bad-range"


async def test_a_vehicles_position_is_its_newest_devices_fix(api: Api, tenant: TenantUsers) -> None:
    vehicle = await new_vehicle(api, tenant)
    url = f"/api/v1/vehicles/{vehicle['id']}/position"
    r = await api.client.get(url, headers=tenant.headers("viewer"))
    assert r.status_code == 404
    assert r.json()["type"] == "/problems/no-position"
    tracker = await device(api, tenant, vehicle_id=vehicle["id"])
    phone = await device(api, tenant, vehicle_id=vehicle["id"])
    await _send(api, tracker["credential"], [{"time": _iso(api, -60), "lat": 1.0, "lon": 2.0}])
    await _send(api, phone["credential"], [{"time": _iso(api, -30), "lat": 3.0, "lon": 4.0}])
    r = await api.client.get(url, headers=tenant.headers("viewer"))
    assert r.status_code == 200
    assert (r.json()["lat"], r.json()["lon"], r.json()["device_id"]) == (3.0, 4.0, phone["id"])
    # A late message of the tracker with an older fix does not move the vehicle back.
    await _send(api, tracker["credential"], [{"time": _iso(api, -90), "lat": 5.0, "lon": 6.0}])
    r = await api.client.get(url, headers=tenant.headers("viewer"))
    assert (r.json()["lat"], r.json()["lon"]) == (3.0, 4.0)


async def test_the_snapshot_holds_this_tenants_devices_only(api: Api, tenant: TenantUsers) -> None:
    mine = await device(api, tenant)
    other = await api.tenant(roles=["admin"])
    theirs = await device(api, other)
    await _send(api, mine["credential"], _track(api, 1))
    await _send(api, theirs["credential"], _track(api, 1))
    r = await api.client.get("/api/v1/telemetry/snapshot", headers=tenant.headers("viewer"))
    assert r.status_code == 200
    assert [p["device_id"] for p in r.json()["data"]] == [mine["id"]]
    r = await api.client.get(
        f"/api/v1/devices/{theirs['id']}/positions", headers=tenant.headers("admin")
    )
    assert r.status_code == 404


async def test_a_full_batch_is_larger_than_other_bodies_and_is_taken(
    api: Api, tenant: TenantUsers
) -> None:
    """10,000 points with every field are over the 1 MiB every other route allows: the batch
    route has its own limit (telemetry.batch_max_body_bytes), and only it."""
    d = await device(api, tenant)
    points = _track(
        api,
        api.settings.telemetry.max_batch_points,
        start_s=-20_000,
        speed=12.5,
        course=180.0,
        hdop=0.9,
        charging=False,
        altitude=190.5,
        accuracy=4.0,
        battery=80,
        ignition=True,
        odometer=123456.7,
        attributes={"fuel": 40.5, "rpm": 1800, "coolant": 88.0},
    )
    body = json.dumps({"points": points}).encode()
    assert len(body) > api.settings.http.max_body_bytes
    assert len(body) < api.settings.telemetry.batch_max_body_bytes
    headers = {**_bearer(d["credential"]), "content-type": "application/json"}
    r = await api.client.post(URL, content=body, headers=headers)
    assert r.status_code == 202, r.text[:300]
    assert r.json()["accepted"] == len(points), r.json()["rejected"][:2]
    assert await drain(api) == len(points)  # stored (and the shared queue left empty)
    # The same bytes to another route are refused at the edge of the app.
    r = await api.client.post("/api/v1/vehicles", content=body, headers=tenant.headers("admin"))
    assert r.status_code == 413
    too_big = b" " * (api.settings.telemetry.batch_max_body_bytes + 1)
    r = await api.client.post(URL, content=too_big, headers=headers)
    assert r.status_code == 413
    assert str(api.settings.telemetry.batch_max_body_bytes) in r.json()["detail"]
