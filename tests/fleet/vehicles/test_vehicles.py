"""Vehicles: create/read/update, validation, uniqueness, meters, ETag preconditions, audit."""

from __future__ import annotations

import asyncio
from datetime import date
from typing import Any

import pytest

from tests.kit.app import Api
from tests.kit.factories import audit_events, new_vehicle, vehicle_body
from tests.kit.problems import assert_problem

V = "/api/v1/vehicles"
EUROPEAN_VIN = "WVWZZZ1JZXW000001"


async def test_create_read_patch(api: Api) -> None:
    t = await api.tenant(roles=["admin"])
    body = vehicle_body(vin="  1hgcm82633a004352 ", plate="ab 123", plate_jurisdiction="us-il")
    r = await api.client.post(V, json=body, headers=t.headers())
    assert r.status_code == 201, r.text
    created = r.json()
    assert r.headers["Location"] == f"{V}/{created['id']}"
    assert r.headers["ETag"] == '"v1"'
    assert created["version"] == 1
    assert created["vin"] == "1HGCM82633A004352"
    assert (created["plate"], created["plate_jurisdiction"]) == ("AB 123", "US-IL")
    assert created["status"] == "active"
    assert created["odometer_m"] == 1000
    assert created["vin_nonstandard"] is False

    r = await api.client.get(r.headers["Location"], headers=t.headers())
    assert r.status_code == 200, r.text
    assert r.headers["ETag"] == '"v1"'
    assert r.json() == created

    r = await api.client.patch(
        f"{V}/{created['id']}",
        json={"make": "Volvo", "department": "Streets", "status": "in_shop"},
        headers=t.headers(),
    )
    assert r.status_code == 200, r.text
    assert r.headers["ETag"] == '"v2"'
    patched = r.json()
    assert (patched["make"], patched["department"], patched["status"]) == (
        "Volvo",
        "Streets",
        "in_shop",
    )
    assert patched["version"] == 2
    assert patched["model"] == created["model"]

    r = await api.client.get(f"{V}/{created['id']}", headers=t.headers())
    assert r.json() == patched
    assert r.headers["ETag"] == '"v2"'


async def test_unknown_and_malformed_ids(api: Api) -> None:
    t = await api.tenant(roles=["viewer"])
    r = await api.client.get(
        f"{V}/00000000-0000-4000-8000-000000000000", headers=t.headers("viewer")
    )
    assert_problem(r, 404, "not-found")
    r = await api.client.get(f"{V}/not-a-uuid", headers=t.headers("viewer"))
    assert_problem(r, 422, "validation-error")
    r = await api.client.get(V)
    assert_problem(r, 401)


async def test_viewer_cannot_write(api: Api) -> None:
    t = await api.tenant(roles=["admin", "viewer"])
    v = await new_vehicle(api, t)
    r = await api.client.post(V, json=vehicle_body(), headers=t.headers("viewer"))
    assert_problem(r, 403, "forbidden")
    r = await api.client.patch(f"{V}/{v['id']}", json={"make": "X"}, headers=t.headers("viewer"))
    assert_problem(r, 403, "forbidden")
    r = await api.client.post(
        f"{V}/{v['id']}/meters", json={"odometer_m": 5000}, headers=t.headers("viewer")
    )
    assert_problem(r, 403, "forbidden")


INVALID_CREATE: list[tuple[str, dict[str, Any]]] = [
    ("year too old", vehicle_body(year=1899)),
    ("year too far", vehicle_body(year=2101)),
    ("year three ahead", vehicle_body(year=date.today().year + 3)),
    ("year not a number", vehicle_body(year="twenty")),
    ("negative odometer", vehicle_body(odometer_m=-1)),
    ("odometer too large", vehicle_body(odometer_m=10**11)),
    ("negative engine hours", vehicle_body(engine_hours_s=-5)),
    ("unknown vehicle type", vehicle_body(vehicle_type="spaceship")),
    ("unknown fuel type", vehicle_body(fuel_type="coal")),
    ("unknown status", vehicle_body(status="stolen")),
    ("unknown field", vehicle_body(colour="red")),
    ("cost without currency", vehicle_body(purchase_cost_minor=2_500_000)),
    ("unknown currency", vehicle_body(purchase_cost_minor=1, purchase_currency="XXY")),
    ("negative cost", vehicle_body(purchase_cost_minor=-1, purchase_currency="USD")),
    ("lat without lon", vehicle_body(home_lat=41.88)),
    ("lon without lat", vehicle_body(home_lon=-87.63)),
    ("lat out of range", vehicle_body(home_lat=91, home_lon=0)),
    ("zero tank", vehicle_body(tank_capacity_l=0)),
    ("plate with symbols", vehicle_body(plate="AB$12")),
    ("empty unit number", vehicle_body(unit_number="   ")),
    ("vin null", vehicle_body(vin=None)),
    ("NUL in make", vehicle_body(make="Ford\u0000")),
    ("NUL in unit number", vehicle_body(unit_number="\u0000")),
    ("NUL in notes", vehicle_body(notes="a\u0000b")),
    ("missing make", {k: v for k, v in vehicle_body().items() if k != "make"}),
]


INVALID_VIN = [
    ("wrong check digit", vehicle_body(vin="1HGCM82643A004352")),
    ("letter O in VIN", vehicle_body(vin="1HGCM82633A00435O")),
    ("short VIN", vehicle_body(vin="1HGCM82633A00435")),
    ("nonstandard with space", vehicle_body(vin="AB 12", vin_nonstandard=True)),
]


async def test_create_validation_errors_are_422(api: Api) -> None:
    t = await api.tenant(roles=["admin"])
    for label, body in INVALID_CREATE:
        r = await api.client.post(V, json=body, headers=t.headers())
        problem = assert_problem(r, 422, "validation-error")
        assert problem["errors"], label
    for raw in (b"[]", b"not json", b'{"year": 2020'):
        r = await api.client.post(
            V, content=raw, headers={**t.headers(), "Content-Type": "application/json"}
        )
        assert_problem(r, 422, "validation-error")
    for _label, body in INVALID_VIN:
        r = await api.client.post(V, json=body, headers=t.headers())
        assert_problem(r, 422, "invalid-vin")
    r = await api.client.get(V, headers=t.headers())
    assert r.json()["data"] == []


async def test_bad_vin_explains_the_check_digit(api: Api) -> None:
    t = await api.tenant(roles=["admin"])
    r = await api.client.post(V, json=vehicle_body(vin="1HGCM82643A004352"), headers=t.headers())
    # One type for a bad VIN, on create as on update (docs/api.md), with the field named.
    problem = assert_problem(r, 422, "invalid-vin")
    assert "check digit" in problem["detail"]
    assert problem["errors"][0]["loc"] == ["body", "vin"]


async def test_nonstandard_vin(api: Api) -> None:
    t = await api.tenant(roles=["admin"])
    r = await api.client.post(V, json=vehicle_body(vin=EUROPEAN_VIN), headers=t.headers())
    assert_problem(r, 422, "invalid-vin")
    v = await new_vehicle(api, t, vin=EUROPEAN_VIN.lower(), vin_nonstandard=True)
    assert v["vin"] == EUROPEAN_VIN
    assert v["vin_nonstandard"] is True

    # Clearing the flag must re-validate the VIN it already has.
    r = await api.client.patch(
        f"{V}/{v['id']}", json={"vin_nonstandard": False}, headers=t.headers()
    )
    assert_problem(r, 422, "invalid-vin")
    r = await api.client.patch(f"{V}/{v['id']}", json={"vin": "AB CD"}, headers=t.headers())
    assert_problem(r, 422, "invalid-vin")
    r = await api.client.patch(
        f"{V}/{v['id']}",
        json={"vin": "1HGCM82633A004352", "vin_nonstandard": False},
        headers=t.headers(),
    )
    assert r.status_code == 200, r.text
    assert (r.json()["vin"], r.json()["vin_nonstandard"]) == ("1HGCM82633A004352", False)


async def test_patch_validation_errors_are_422_and_change_nothing(api: Api) -> None:
    t = await api.tenant(roles=["admin"])
    v = await new_vehicle(api, t, purchase_cost_minor=100, purchase_currency="USD")
    cases: list[dict[str, Any]] = [
        {"year": 1800},
        {"year": date.today().year + 3},
        {"odometer_m": -1},
        {"vehicle_type": "spaceship"},
        {"colour": "red"},
        {"home_lat": 10.0},
        {"home_lon": 10.0},
        {"purchase_currency": None},
        {"make": None},
        {"status": None},
        {"odometer_m": None},
        {"unit_number": ""},
        {"vin": "1HGCM82633A00435Q"},
        {"vin": "1HGCM82643A004352"},
        {"meter_correction_reason": "x"},
        {"notes": "\u0000"},
        {"odometer_m": 1, "meter_correction_reason": "typo\u0000"},
        [],  # type: ignore[list-item]  # a body that is not an object
    ]
    for body in cases:
        r = await api.client.patch(f"{V}/{v['id']}", json=body, headers=t.headers())
        assert_problem(r, 422)
    r = await api.client.get(f"{V}/{v['id']}", headers=t.headers())
    assert r.json() == v
    # A valid pair together is fine, and so is clearing both.
    r = await api.client.patch(
        f"{V}/{v['id']}", json={"home_lat": 41.88, "home_lon": -87.63}, headers=t.headers()
    )
    assert r.status_code == 200, r.text
    r = await api.client.patch(
        f"{V}/{v['id']}", json={"home_lat": None, "home_lon": None}, headers=t.headers()
    )
    assert r.status_code == 200, r.text
    assert r.json()["home_lat"] is None


async def test_duplicates_within_a_tenant_conflict(api: Api) -> None:
    t = await api.tenant(roles=["admin"])
    other = await api.tenant(roles=["admin"])
    v = await new_vehicle(api, t, plate="DUP 1", plate_jurisdiction="US-IL")

    r = await api.client.post(V, json=vehicle_body(vin=v["vin"]), headers=t.headers())
    assert_problem(r, 409, "duplicate-vin")
    r = await api.client.post(V, json=vehicle_body(vin=v["vin"].lower()), headers=t.headers())
    assert_problem(r, 409, "duplicate-vin")
    r = await api.client.post(
        V, json=vehicle_body(plate="dup 1", plate_jurisdiction="us-il"), headers=t.headers()
    )
    assert_problem(r, 409, "duplicate-plate")
    # The same plate in another jurisdiction is another plate.
    await new_vehicle(api, t, plate="DUP 1", plate_jurisdiction="US-WI")

    # Another tenant may register the very same vehicle.
    w = await new_vehicle(api, other, vin=v["vin"], plate="DUP 1", plate_jurisdiction="US-IL")
    assert w["vin"] == v["vin"]

    # Changing a vehicle into a duplicate is a conflict too, and changes nothing.
    u = await new_vehicle(api, t)
    r = await api.client.patch(f"{V}/{u['id']}", json={"vin": v["vin"]}, headers=t.headers())
    assert_problem(r, 409, "duplicate-vin")
    r = await api.client.patch(
        f"{V}/{u['id']}",
        json={"plate": "Dup 1", "plate_jurisdiction": "US-IL"},
        headers=t.headers(),
    )
    assert_problem(r, 409, "duplicate-plate")
    r = await api.client.get(f"{V}/{u['id']}", headers=t.headers())
    assert r.json() == u
    # Patching a vehicle with its own VIN is not a conflict with itself.
    r = await api.client.patch(f"{V}/{v['id']}", json={"vin": v["vin"]}, headers=t.headers())
    assert r.status_code == 200, r.text


async def test_concurrent_creates_of_one_vin_give_one_vehicle(api: Api) -> None:
    t = await api.tenant(roles=["admin"])
    body = vehicle_body()
    bodies = [{**body, "plate": f"RACE{i}", "unit_number": f"R-{i}"} for i in range(5)]
    responses = await asyncio.gather(
        *(api.client.post(V, json=b, headers=t.headers()) for b in bodies)
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201, 409, 409, 409, 409], [r.text for r in responses]
    for r in responses:
        if r.status_code == 409:
            assert_problem(r, 409, "duplicate-vin")
    r = await api.client.get(V, headers=t.headers())
    assert len(r.json()["data"]) == 1


async def test_odometer_never_goes_backwards_without_a_reason(api: Api) -> None:
    t = await api.tenant(roles=["admin"])
    v = await new_vehicle(api, t, odometer_m=50_000, engine_hours_s=7_200)
    url = f"{V}/{v['id']}"

    r = await api.client.patch(url, json={"odometer_m": 49_999}, headers=t.headers())
    problem = assert_problem(r, 422, "meter-rollback")
    assert "odometer_m" in problem["detail"]
    r = await api.client.patch(url, json={"engine_hours_s": 0, "make": "X"}, headers=t.headers())
    assert_problem(r, 422, "meter-rollback")
    r = await api.client.get(url, headers=t.headers())
    assert r.json() == v

    # Going up needs no reason and is an ordinary update.
    r = await api.client.patch(url, json={"odometer_m": 60_000}, headers=t.headers())
    assert r.status_code == 200, r.text
    assert r.json()["odometer_m"] == 60_000

    reason = "odometer replaced at 60,000 km"
    r = await api.client.patch(
        url, json={"odometer_m": 1_000, "meter_correction_reason": reason}, headers=t.headers()
    )
    assert r.status_code == 200, r.text
    assert r.json()["odometer_m"] == 1_000

    events = await audit_events(api, t, "vehicle", v["id"])
    assert [e["action"] for e in events] == ["create", "update", "meter_correction"]
    correction = events[-1]
    assert correction["changes"]["odometer_m"] == {"before": 60_000, "after": 1_000}
    assert correction["changes"]["meter_correction_reason"]["after"] == reason
    assert correction["actor_user_id"] == str(t.users["admin"].id)


async def test_meter_readings(api: Api) -> None:
    t = await api.tenant(roles=["admin", "mechanic"])
    v = await new_vehicle(api, t, odometer_m=10_000, engine_hours_s=100)
    url = f"{V}/{v['id']}/meters"
    mech = t.headers("mechanic")

    r = await api.client.post(url, json={"odometer_m": 12_500}, headers=mech)
    assert r.status_code == 200, r.text
    assert (r.json()["odometer_m"], r.json()["engine_hours_s"]) == (12_500, 100)
    assert r.headers["ETag"] == '"v2"'
    r = await api.client.post(url, json={"odometer_m": 12_500, "engine_hours_s": 200}, headers=mech)
    assert r.status_code == 200, r.text
    assert r.json()["engine_hours_s"] == 200

    r = await api.client.post(url, json={"odometer_m": 12_499}, headers=mech)
    assert_problem(r, 422, "meter-rollback")
    # A rejected reading leaves both meters alone, even the one that went up.
    r = await api.client.post(url, json={"odometer_m": 20_000, "engine_hours_s": 1}, headers=mech)
    assert_problem(r, 422, "meter-rollback")
    for body in ({}, {"odometer_m": -1}, {"odometer_m": None}, {"trip_m": 5}):
        r = await api.client.post(url, json=body, headers=mech)
        assert_problem(r, 422, "validation-error")
    r = await api.client.get(f"{V}/{v['id']}", headers=mech)
    assert (r.json()["odometer_m"], r.json()["engine_hours_s"]) == (12_500, 200)

    # A mechanic records readings but cannot correct meters or edit the vehicle.
    r = await api.client.patch(
        f"{V}/{v['id']}",
        json={"odometer_m": 1, "meter_correction_reason": "mistake"},
        headers=mech,
    )
    assert_problem(r, 403, "forbidden")

    events = await audit_events(api, t, "vehicle", v["id"])
    assert [e["action"] for e in events] == ["create", "meter_reading", "meter_reading"]
    assert events[1]["changes"] == {"odometer_m": {"before": 10_000, "after": 12_500}}
    assert events[1]["actor_role"] == "mechanic"


async def test_if_match(api: Api) -> None:
    t = await api.tenant(roles=["admin"])
    v = await new_vehicle(api, t)
    url = f"{V}/{v['id']}"

    r = await api.client.patch(url, json={"make": "A"}, headers={**t.headers(), "If-Match": '"v1"'})
    assert r.status_code == 200, r.text
    assert r.headers["ETag"] == '"v2"'

    for stale in ('"v1"', '"v3"', 'W/"v1"', '"v1", "v0"'):
        r = await api.client.patch(
            url, json={"make": "Stale"}, headers={**t.headers(), "If-Match": stale}
        )
        assert_problem(r, 412, "precondition-failed")
    for garbage in (
        "v2",
        "2",
        '"2"',
        '"v2',
        "banana",
        '"v-2"',
        '"v99999999999999999999"',
        "x" * 300,
    ):
        r = await api.client.patch(
            url, json={"make": "Garbage"}, headers={**t.headers(), "If-Match": garbage}
        )
        assert_problem(r, 412, "precondition-failed")
    r = await api.client.get(url, headers=t.headers())
    assert r.json()["make"] == "A"
    assert r.headers["ETag"] == '"v2"'

    r = await api.client.patch(url, json={"make": "B"}, headers={**t.headers(), "If-Match": '"v2"'})
    assert r.status_code == 200, r.text
    assert r.headers["ETag"] == '"v3"'
    r = await api.client.patch(url, json={"make": "C"}, headers={**t.headers(), "If-Match": "*"})
    assert r.status_code == 200, r.text
    assert r.headers["ETag"] == '"v4"'
    # Failed preconditions are not changes: only the three updates are in the audit log.
    assert [e["action"] for e in await audit_events(api, t, "vehicle", v["id"])] == [
        "create",
        "update",
        "update",
        "update",
    ]


@pytest.mark.parametrize("if_match", ['"v1"', None])
async def test_concurrent_patches_never_lose_an_update(api: Api, if_match: str | None) -> None:
    t = await api.tenant(roles=["admin"])
    v = await new_vehicle(api, t)
    headers = {**t.headers(), **({"If-Match": if_match} if if_match else {})}
    responses = await asyncio.gather(
        *(
            api.client.patch(f"{V}/{v['id']}", json={"notes": f"writer {i}"}, headers=headers)
            for i in range(4)
        )
    )
    ok = [r for r in responses if r.status_code == 200]
    if if_match:
        # One writer wins; the others see that the version they read is gone.
        assert len(ok) == 1, [r.text for r in responses]
        for r in responses:
            if r.status_code != 200:
                assert_problem(r, 412, "precondition-failed")
    else:
        # Without a precondition the writes are serialised, none is lost or refused.
        assert len(ok) == 4, [r.text for r in responses]
    # Every success is a distinct version and the final state is the last success.
    versions = sorted(r.json()["version"] for r in ok)
    assert versions == list(range(2, 2 + len(ok)))
    r = await api.client.get(f"{V}/{v['id']}", headers=t.headers())
    final = r.json()
    assert final["version"] == 1 + len(ok)
    assert final["notes"] in {x.json()["notes"] for x in ok}
    actions = [e["action"] for e in await audit_events(api, t, "vehicle", v["id"])]
    assert actions == ["create"] + ["update"] * len(ok)


async def test_other_tenants_vehicle_is_404_and_audited(api: Api) -> None:
    owner = await api.tenant(roles=["admin"])
    prober = await api.tenant(roles=["admin"])
    v = await new_vehicle(api, owner)
    url = f"{V}/{v['id']}"
    assert_problem(await api.client.get(url, headers=prober.headers()), 404, "not-found")
    r = await api.client.patch(url, json={"make": "Stolen"}, headers=prober.headers())
    assert_problem(r, 404, "not-found")
    r = await api.client.post(f"{url}/meters", json={"odometer_m": 10**6}, headers=prober.headers())
    assert_problem(r, 404, "not-found")
    r = await api.client.get(V, headers=prober.headers())
    assert r.json()["data"] == []

    r = await api.client.get(url, headers=owner.headers())
    assert r.json() == v
    events = await audit_events(api, owner, "vehicle", v["id"])
    probes = [e for e in events if e["action"] == "cross_tenant_access_denied"]
    assert len(probes) == 3
    assert probes[0]["changes"]["actor_tenant_id"]["after"] == str(prober.id)


async def test_every_vehicle_mutation_is_audited(api: Api) -> None:
    t = await api.tenant(roles=["admin"])
    v = await new_vehicle(api, t, make="Ford")
    await api.client.patch(f"{V}/{v['id']}", json={"make": "Volvo"}, headers=t.headers())
    await api.client.post(f"{V}/{v['id']}/meters", json={"odometer_m": 9999}, headers=t.headers())
    await api.client.patch(f"{V}/{v['id']}", json={"status": "retired"}, headers=t.headers())
    events = await audit_events(api, t, "vehicle", v["id"])
    assert [e["action"] for e in events] == ["create", "update", "meter_reading", "update"]
    create, update, _, retire = events
    assert create["changes"]["vin"] == {"before": None, "after": v["vin"]}
    assert create["entity_id"] == v["id"]
    assert update["changes"] == {"make": {"before": "Ford", "after": "Volvo"}}
    assert retire["changes"] == {"status": {"before": "active", "after": "retired"}}
    assert all(e["request_id"] for e in events)


async def test_if_match_with_a_list_of_tags(api: Api) -> None:
    t = await api.tenant(roles=["admin"])
    v = await new_vehicle(api, t)
    url = f"/api/v1/vehicles/{v['id']}"
    # The current tag anywhere in the list: applied.
    r = await api.client.patch(
        url, json={"notes": "a"}, headers={**t.headers(), "If-Match": '"v9", "v1"'}
    )
    assert r.status_code == 200, r.text
    # None of them current: 412, nothing written.
    r = await api.client.patch(
        url, json={"notes": "b"}, headers={**t.headers(), "If-Match": '"v1", "v3"'}
    )
    assert_problem(r, 412, "precondition-failed")
    assert (await api.client.get(url, headers=t.headers())).json()["notes"] == "a"
