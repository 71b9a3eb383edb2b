"""Assignments: a driver on a vehicle for a period; no overlaps for either, even under races."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from tests.kit.app import Api, TenantUsers
from tests.kit.factories import audit_events, new_driver, new_vehicle
from tests.kit.problems import assert_problem

A = "/api/v1/assignments"
T0 = datetime(2025, 6, 1, 8, 0, tzinfo=UTC)


def at(days: float) -> str:
    return (T0 + timedelta(days=days)).isoformat()


async def assign(
    api: Api,
    t: TenantUsers,
    vehicle: dict[str, Any],
    driver: dict[str, Any],
    starts: str,
    ends: str | None = None,
    role: str = "admin",
) -> Any:
    body: dict[str, Any] = {
        "vehicle_id": vehicle["id"],
        "driver_id": driver["id"],
        "starts_at": starts,
    }
    if ends is not None:
        body["ends_at"] = ends
    return await api.client.post(A, json=body, headers=t.headers(role))


async def test_create_read_end_delete(api: Api) -> None:
    t = await api.tenant(roles=["admin", "dispatcher"])
    v, d = await new_vehicle(api, t), await new_driver(api, t)
    r = await assign(api, t, v, d, at(0), role="dispatcher")
    assert r.status_code == 201, r.text
    a = r.json()
    assert r.headers["Location"] == f"{A}/{a['id']}"
    assert r.headers["ETag"] == '"v1"'
    assert a["ends_at"] is None
    assert datetime.fromisoformat(a["starts_at"]) == T0

    r = await api.client.get(f"{A}/{a['id']}", headers=t.headers("dispatcher"))
    assert r.status_code == 200, r.text
    assert datetime.fromisoformat(r.json()["starts_at"]) == T0

    # End it; a bounded period then leaves room after it.
    r = await api.client.patch(
        f"{A}/{a['id']}",
        json={"ends_at": at(3), "notes": "back to depot"},
        headers={**t.headers("dispatcher"), "If-Match": '"v1"'},
    )
    assert r.status_code == 200, r.text
    assert datetime.fromisoformat(r.json()["ends_at"]) == T0 + timedelta(days=3)
    assert r.headers["ETag"] == '"v2"'
    r = await assign(api, t, v, d, at(3))
    assert r.status_code == 201, r.text
    later = r.json()

    r = await api.client.get(A, params={"vehicle_id": v["id"]}, headers=t.headers())
    assert [x["id"] for x in r.json()["data"]] == [later["id"], a["id"]]  # newest start first
    r = await api.client.get(A, params={"active_at": at(1)}, headers=t.headers())
    assert [x["id"] for x in r.json()["data"]] == [a["id"]]
    r = await api.client.get(A, params={"active_at": at(3)}, headers=t.headers())
    assert [x["id"] for x in r.json()["data"]] == [later["id"]]

    r = await api.client.delete(f"{A}/{later['id']}", headers=t.headers("dispatcher"))
    assert r.status_code == 204, r.text
    r = await api.client.get(f"{A}/{later['id']}", headers=t.headers())
    assert_problem(r, 404, "not-found")

    assert [e["action"] for e in await audit_events(api, t, "assignment", a["id"])] == [
        "create",
        "update",
    ]
    events = await audit_events(api, t, "assignment", later["id"])
    assert [e["action"] for e in events] == ["create", "delete"]
    assert events[1]["changes"]["driver_id"] == {"before": d["id"], "after": None}


# (existing start, existing end, new start, new end, allowed)
OVERLAPS = [
    # bounded existing [0, 10)
    (0, 10, 5, None, False),
    (0, 10, -5, 1, False),
    (0, 10, 1, 2, False),
    (0, 10, -1, 11, False),
    (0, 10, 0, 10, False),
    (0, 10, 9.99, 20, False),
    (0, 10, -5, None, False),
    (0, 10, 10, 20, True),  # adjacent after: [a,b) then [b,c)
    (0, 10, -5, 0, True),  # adjacent before
    (0, 10, 10, None, True),
    (0, 10, 20, 30, True),
    # open-ended existing [0, ∞)
    (0, None, 100, 101, False),
    (0, None, -1, 0.01, False),
    (0, None, -10, None, False),
    (0, None, -2, 0, True),
    (0, None, -20, -10, True),
]


async def test_no_overlap_for_a_vehicle_or_a_driver(api: Api) -> None:
    t = await api.tenant(roles=["admin"])
    for i, (s0, e0, s1, e1, allowed) in enumerate(OVERLAPS):
        v, w = await new_vehicle(api, t, n=5000 + 2 * i), await new_vehicle(api, t, n=5001 + 2 * i)
        d, e = await new_driver(api, t, n=5000 + 2 * i), await new_driver(api, t, n=5001 + 2 * i)
        r = await assign(api, t, v, d, at(s0), None if e0 is None else at(e0))
        assert r.status_code == 201, r.text
        existing = r.json()["id"]
        case = (s0, e0, s1, e1)
        new_end = None if e1 is None else at(e1)
        # Same vehicle, another driver; then same driver, another vehicle.
        for vehicle, driver, what in ((v, e, "vehicle"), (w, d, "driver")):
            r = await assign(api, t, vehicle, driver, at(s1), new_end)
            if allowed:
                assert r.status_code == 201, (case, what, r.text)
                await api.client.delete(f"{A}/{r.json()['id']}", headers=t.headers())
            else:
                problem = assert_problem(r, 409, "assignment-overlap")
                assert what in problem["detail"], case
                assert problem["conflicting_assignment_id"] == existing


async def test_time_zones_are_compared_as_instants(api: Api) -> None:
    t = await api.tenant(roles=["admin"])
    v, d, e = await new_vehicle(api, t), await new_driver(api, t), await new_driver(api, t)
    r = await assign(api, t, v, d, "2025-06-01T08:00:00Z", "2025-06-01T12:00:00Z")
    assert r.status_code == 201, r.text
    # 12:30+01:00 is 11:30Z: inside the first period.
    r = await assign(api, t, v, e, "2025-06-01T12:30:00+01:00", "2025-06-01T18:00:00+01:00")
    assert_problem(r, 409, "assignment-overlap")
    # 13:00+01:00 is exactly 12:00Z: adjacent.
    r = await assign(api, t, v, e, "2025-06-01T13:00:00+01:00", "2025-06-01T18:00:00+01:00")
    assert r.status_code == 201, r.text
    stored = datetime.fromisoformat(r.json()["starts_at"])
    assert stored == datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
    assert stored.utcoffset() == timedelta(0)
    r = await api.client.get(f"{A}/{r.json()['id']}", headers=t.headers())
    assert datetime.fromisoformat(r.json()["starts_at"]).utcoffset() == timedelta(0)
    assert datetime.fromisoformat(r.json()["starts_at"]) == stored
    eastern = timezone(timedelta(hours=-4))
    r = await api.client.get(
        A,
        params={"active_at": datetime(2025, 6, 1, 9, 0, tzinfo=eastern).isoformat()},
        headers=t.headers(),
    )
    assert [x["starts_at"][:16] for x in r.json()["data"]] == ["2025-06-01T12:00"]


async def test_period_validation(api: Api) -> None:
    t = await api.tenant(roles=["admin"])
    v, d = await new_vehicle(api, t), await new_driver(api, t)
    bad = [
        (at(1), at(0)),
        (at(1), at(1)),
        ("2025-06-01T08:00:00", None),
        (at(0), "2025-06-02T08:00:00"),
        ("2025-06-01", None),
        ("yesterday", None),
        # Past the end of the calendar once in UTC.
        ("9999-12-31T23:00:00-05:00", None),
        (at(0), "9999-12-31T23:00:00-05:00"),
        ("0001-01-01T00:00:00+01:00", None),
    ]
    for starts, ends in bad:
        r = await assign(api, t, v, d, starts, ends)
        assert_problem(r, 422, "validation-error")
    for body in (
        {"vehicle_id": v["id"], "starts_at": at(0)},
        {"vehicle_id": v["id"], "driver_id": d["id"], "starts_at": at(0), "extra": 1},
        {"vehicle_id": "nope", "driver_id": d["id"], "starts_at": at(0)},
    ):
        r = await api.client.post(A, json=body, headers=t.headers())
        assert_problem(r, 422, "validation-error")

    r = await assign(api, t, v, d, at(0))
    a = r.json()
    for patch in (
        {"ends_at": at(0)},
        {"ends_at": at(-1)},
        {"ends_at": "2025-06-05T08:00:00"},
        {"notes": None},
        {"starts_at": at(1)},
        {"vehicle_id": v["id"]},
        {"ends_at": "9999-12-31T23:00:00-05:00"},
        {"notes": "a\u0000"},
    ):
        r = await api.client.patch(f"{A}/{a['id']}", json=patch, headers=t.headers())
        assert_problem(r, 422, "validation-error")
    for active_at in ("2025-06-01T08:00:00", "9999-12-31T23:00:00-05:00"):
        r = await api.client.get(A, params={"active_at": active_at}, headers=t.headers())
        assert_problem(r, 422, "validation-error")
    r = await api.client.get(f"{A}/{a['id']}", headers=t.headers())
    assert r.json() == {**a, "starts_at": r.json()["starts_at"]}
    assert r.json()["version"] == 1


async def test_reopening_or_extending_into_another_period_conflicts(api: Api) -> None:
    t = await api.tenant(roles=["admin"])
    v, d, e = await new_vehicle(api, t), await new_driver(api, t), await new_driver(api, t)
    first = (await assign(api, t, v, d, at(0), at(5))).json()
    second = (await assign(api, t, v, e, at(5), at(10))).json()
    for ends in (None, at(6), at(20)):
        r = await api.client.patch(
            f"{A}/{first['id']}", json={"ends_at": ends}, headers=t.headers()
        )
        problem = assert_problem(r, 409, "assignment-overlap")
        assert problem["conflicting_assignment_id"] == second["id"]
    # Shortening is always fine, and so is ending exactly where the next one starts.
    r = await api.client.patch(f"{A}/{first['id']}", json={"ends_at": at(4)}, headers=t.headers())
    assert r.status_code == 200, r.text
    r = await api.client.patch(f"{A}/{first['id']}", json={"ends_at": at(5)}, headers=t.headers())
    assert r.status_code == 200, r.text


async def test_retired_vehicle_and_inactive_driver_cannot_be_assigned(api: Api) -> None:
    t = await api.tenant(roles=["admin"])
    retired = await new_vehicle(api, t, status="retired")
    in_shop = await new_vehicle(api, t, status="in_shop")
    d = await new_driver(api, t)
    r = await assign(api, t, retired, d, at(0))
    assert_problem(r, 409, "vehicle-retired")
    for status in ("inactive", "suspended"):
        other = await new_driver(api, t, status=status)
        r = await assign(api, t, in_shop, other, at(0))
        problem = assert_problem(r, 409, "driver-not-active")
        assert status in problem["detail"]
    # Retiring an assigned vehicle happens through PATCH; then no new assignment.
    v = await new_vehicle(api, t)
    assert (await assign(api, t, v, d, at(0), at(1))).status_code == 201
    r = await api.client.patch(
        f"/api/v1/vehicles/{v['id']}", json={"status": "retired"}, headers=t.headers()
    )
    assert r.status_code == 200, r.text
    r = await assign(api, t, v, d, at(2))
    assert_problem(r, 409, "vehicle-retired")
    r = await api.client.get(A, params={"driver_id": d["id"]}, headers=t.headers())
    assert len(r.json()["data"]) == 1


async def test_other_tenants_objects_are_404(api: Api) -> None:
    t = await api.tenant(roles=["admin"])
    other = await api.tenant(roles=["admin"])
    v, d = await new_vehicle(api, t), await new_driver(api, t)
    ov, od = await new_vehicle(api, other), await new_driver(api, other)
    assert_problem(await assign(api, t, ov, d, at(0)), 404, "not-found")
    assert_problem(await assign(api, t, v, od, at(0)), 404, "not-found")
    theirs = (await assign(api, other, ov, od, at(0))).json()
    for call in (
        api.client.get(f"{A}/{theirs['id']}", headers=t.headers()),
        api.client.patch(f"{A}/{theirs['id']}", json={"notes": "x"}, headers=t.headers()),
        api.client.delete(f"{A}/{theirs['id']}", headers=t.headers()),
    ):
        assert_problem(await call, 404, "not-found")
    r = await api.client.get(A, headers=t.headers())
    assert r.json()["data"] == []
    r = await api.client.get(f"{A}/{theirs['id']}", headers=other.headers())
    assert r.json()["notes"] == ""
    # Our vehicle and driver stay free: the failed attempts assigned nothing.
    assert (await assign(api, t, v, d, at(0))).status_code == 201


@pytest.mark.parametrize("same", ["vehicle", "driver"])
async def test_concurrent_creates_for_one_vehicle_or_driver(api: Api, same: str) -> None:
    t = await api.tenant(roles=["admin"])
    n = 6
    if same == "vehicle":
        vehicles = [await new_vehicle(api, t)] * n
        drivers = [await new_driver(api, t) for _ in range(n)]
    else:
        vehicles = [await new_vehicle(api, t) for _ in range(n)]
        drivers = [await new_driver(api, t)] * n
    responses = await asyncio.gather(
        *(assign(api, t, vehicles[i], drivers[i], at(i * 0.1), at(10 + i)) for i in range(n))
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] + [409] * (n - 1), [r.text for r in responses]
    for r in responses:
        if r.status_code == 409:
            assert_problem(r, 409, "assignment-overlap")
    key = f"{same}_id"
    r = await api.client.get(
        A, params={key: (vehicles if same == "vehicle" else drivers)[0]["id"]}, headers=t.headers()
    )
    assert len(r.json()["data"]) == 1


async def test_concurrent_disjoint_creates_all_succeed(api: Api) -> None:
    t = await api.tenant(roles=["admin"])
    v = await new_vehicle(api, t)
    drivers = [await new_driver(api, t) for _ in range(5)]
    responses = await asyncio.gather(
        *(assign(api, t, v, drivers[i], at(i), at(i + 1)) for i in range(5))
    )
    assert [r.status_code for r in responses] == [201] * 5, [r.text for r in responses]


async def test_concurrent_end_and_create_do_not_overlap(api: Api) -> None:
    t = await api.tenant(roles=["admin"])
    v, d, e = await new_vehicle(api, t), await new_driver(api, t), await new_driver(api, t)
    first = (await assign(api, t, v, d, at(0), at(5))).json()
    # Reopening `first` and assigning the vehicle from day 6 race; at most one may win.
    for _ in range(3):
        reopen, create = await asyncio.gather(
            api.client.patch(f"{A}/{first['id']}", json={"ends_at": None}, headers=t.headers()),
            assign(api, t, v, e, at(6), at(7)),
        )
        outcome = (reopen.status_code, create.status_code)
        assert outcome in ((200, 409), (409, 201)), (reopen.text, create.text)
        r = await api.client.get(A, params={"vehicle_id": v["id"]}, headers=t.headers())
        periods = sorted((x["starts_at"], x["ends_at"] or "9999") for x in r.json()["data"])
        for (_, end), (start, _) in itertools.pairwise(periods):
            assert end <= start, periods
        # Reset for the next round.
        if create.status_code == 201:
            await api.client.delete(f"{A}/{create.json()['id']}", headers=t.headers())
        await api.client.patch(f"{A}/{first['id']}", json={"ends_at": at(5)}, headers=t.headers())
