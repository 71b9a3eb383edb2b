"""Meter history: each reading with its time and source, listed; readings hold to time order;
a correction names the reading it fixes."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from tests.kit.app import Api, TenantUsers
from tests.kit.factories import audit_events, new_vehicle
from tests.kit.problems import assert_problem


async def _readings(api: Api, t: TenantUsers, vid: str, role: str = "admin") -> list[Any]:
    r = await api.client.get(f"/api/v1/vehicles/{vid}/meters", headers=t.headers(role))
    assert r.status_code == 200, r.text
    data: list[Any] = r.json()["data"]
    return data


async def test_readings_are_kept_with_time_and_source(api: Api) -> None:
    t = await api.tenant(roles=["admin", "mechanic", "viewer"])
    v = await new_vehicle(api, t, odometer_m=1000)
    url = f"/api/v1/vehicles/{v['id']}/meters"
    first = await _readings(api, t, v["id"])
    assert [(x["odometer_m"], x["source"], x["note"]) for x in first] == [
        (1000, "manual", "at registration")
    ]
    api.clock.advance(60)
    r = await api.client.post(
        url, json={"odometer_m": 5000, "source": "device"}, headers=t.headers("mechanic")
    )
    assert r.status_code == 200, r.text
    assert r.json()["odometer_m"] == 5000
    api.clock.advance(60)
    r = await api.client.post(url, json={"engine_hours_s": 7200}, headers=t.headers("mechanic"))
    assert r.json()["engine_hours_s"] == 7200
    history = await _readings(api, t, v["id"], "viewer")
    assert [(x["odometer_m"], x["engine_hours_s"], x["source"]) for x in history] == [
        (None, 7200, "manual"),
        (5000, None, "device"),
        (1000, 0, "manual"),
    ]
    assert history[0]["recorded_by"] == str(t.users["mechanic"].id)
    assert history[0]["read_at"] > history[1]["read_at"]


async def test_readings_hold_to_time_order(api: Api) -> None:
    t = await api.tenant(roles=["admin"])
    v = await new_vehicle(api, t, odometer_m=0)
    url = f"/api/v1/vehicles/{v['id']}/meters"
    start = api.clock.now()
    api.clock.advance(600)

    def at(seconds: float) -> str:
        return (start + timedelta(seconds=seconds)).isoformat()

    r = await api.client.post(
        url, json={"odometer_m": 900, "read_at": at(300)}, headers=t.headers()
    )
    assert r.status_code == 200, r.text
    # A reading from before it, lower: history, not the vehicle's current value.
    r = await api.client.post(
        url, json={"odometer_m": 400, "read_at": at(150)}, headers=t.headers()
    )
    assert r.status_code == 200, r.text
    assert r.json()["odometer_m"] == 900
    # Out of order: above the later reading, or below the earlier one.
    r = await api.client.post(
        url, json={"odometer_m": 950, "read_at": at(150)}, headers=t.headers()
    )
    assert_problem(r, 422, "meter-rollback")
    r = await api.client.post(
        url, json={"odometer_m": 300, "read_at": at(100)}, headers=t.headers()
    )
    assert r.status_code == 200, r.text  # before 400 and 900: in order
    r = await api.client.post(url, json={"odometer_m": 100}, headers=t.headers())
    assert_problem(r, 422, "meter-rollback")
    # Not in the future.
    r = await api.client.post(
        url, json={"odometer_m": 2000, "read_at": at(86400)}, headers=t.headers()
    )
    assert_problem(r, 422, "validation-error")
    values = [x["odometer_m"] for x in await _readings(api, t, v["id"])]
    assert sorted(values, reverse=True) == [900, 400, 300]


async def test_a_correction_names_the_reading_it_fixes(api: Api) -> None:
    t = await api.tenant(roles=["admin", "fleet_manager", "mechanic"])
    v = await new_vehicle(api, t, odometer_m=1000)
    url = f"/api/v1/vehicles/{v['id']}"
    api.clock.advance(60)
    r = await api.client.post(
        f"{url}/meters", json={"odometer_m": 990_000}, headers=t.headers("mechanic")
    )  # a typo: one zero too many
    wrong = (await _readings(api, t, v["id"]))[0]
    assert wrong["odometer_m"] == 990_000
    api.clock.advance(60)
    r = await api.client.patch(
        url,
        json={"odometer_m": 99_000, "corrects_reading_id": wrong["id"]},
        headers=t.headers("fleet_manager"),
    )
    assert_problem(r, 422, "validation-error")  # a correction needs its reason
    r = await api.client.patch(
        url,
        json={
            "odometer_m": 99_000,
            "corrects_reading_id": wrong["id"],
            "meter_correction_reason": "typed one zero too many",
        },
        headers=t.headers("fleet_manager"),
    )
    assert r.status_code == 200, r.text
    assert r.json()["odometer_m"] == 99_000
    correction = (await _readings(api, t, v["id"]))[0]
    assert correction["source"] == "correction"
    assert correction["corrects_id"] == wrong["id"]
    assert correction["note"] == "typed one zero too many"
    # Later readings are held to the corrected value, not to the typo.
    api.clock.advance(60)
    r = await api.client.post(
        f"{url}/meters", json={"odometer_m": 100_000}, headers=t.headers("mechanic")
    )
    assert r.status_code == 200, r.text
    actions = [e["action"] for e in await audit_events(api, t, "vehicle", v["id"])]
    assert "meter_correction" in actions
    # A reading of another vehicle cannot be the one corrected.
    other = await new_vehicle(api, t, odometer_m=5)
    r = await api.client.patch(
        f"/api/v1/vehicles/{other['id']}",
        json={
            "odometer_m": 1,
            "corrects_reading_id": wrong["id"],
            "meter_correction_reason": "not mine",
        },
        headers=t.headers("fleet_manager"),
    )
    assert_problem(r, 422, "validation-error")


async def test_another_tenants_meters_are_not_found(api: Api) -> None:
    t = await api.tenant(roles=["admin"])
    other = await api.tenant(roles=["admin"])
    v = await new_vehicle(api, t)
    r = await api.client.get(f"/api/v1/vehicles/{v['id']}/meters", headers=other.headers())
    assert_problem(r, 404, "not-found")
