"""A user with the driver role sees only their own driver record, vehicles and assignments."""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from typing import Any

from tests.kit.app import Api, TenantUsers
from tests.kit.factories import new_driver, new_vehicle
from tests.kit.problems import assert_problem


async def ids(api: Api, t: TenantUsers, path: str, **params: Any) -> set[str]:
    r = await api.client.get(path, params={"limit": 500, **params}, headers=t.headers("driver"))
    assert r.status_code == 200, r.text
    return {x["id"] for x in r.json()["data"]}


async def csv_ids(api: Api, t: TenantUsers, path: str) -> set[str]:
    r = await api.client.get(path, params={"format": "csv"}, headers=t.headers("driver"))
    assert r.status_code == 200, r.text
    return {row["id"] for row in csv.DictReader(io.StringIO(r.text))}


async def test_driver_sees_only_own_records(api: Api) -> None:
    t = await api.tenant(roles=["admin", "driver"])
    now = api.clock.now()

    def when(days: float) -> str:
        return (now + timedelta(days=days)).isoformat()

    async def assign(v: dict[str, Any], d: dict[str, Any], s: float, e: float | None) -> str:
        body = {"vehicle_id": v["id"], "driver_id": d["id"], "starts_at": when(s)}
        if e is not None:
            body["ends_at"] = when(e)
        r = await api.client.post("/api/v1/assignments", json=body, headers=t.headers())
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    me = await new_driver(api, t)
    colleague = await new_driver(api, t)
    current, past, future, theirs, idle = [await new_vehicle(api, t) for _ in range(5)]
    a_current = await assign(current, me, -1, 1)
    a_past = await assign(past, me, -10, -5)
    a_future = await assign(future, me, 2, 3)
    a_theirs = await assign(theirs, colleague, -1, None)

    # Not linked yet: a driver-role user sees nothing at all.
    for path in ("/api/v1/drivers", "/api/v1/vehicles", "/api/v1/assignments"):
        assert await ids(api, t, path) == set()
        assert await csv_ids(api, t, path) == set()
    r = await api.client.get(f"/api/v1/drivers/{me['id']}", headers=t.headers("driver"))
    assert_problem(r, 404, "not-found")

    r = await api.client.patch(
        f"/api/v1/drivers/{me['id']}",
        json={"user_id": str(t.users["driver"].id)},
        headers=t.headers(),
    )
    assert r.status_code == 200, r.text

    assert await ids(api, t, "/api/v1/drivers") == {me["id"]}
    assert await ids(api, t, "/api/v1/vehicles") == {current["id"]}
    assert await ids(api, t, "/api/v1/assignments") == {a_current, a_past, a_future}
    assert await csv_ids(api, t, "/api/v1/drivers") == {me["id"]}
    assert await csv_ids(api, t, "/api/v1/vehicles") == {current["id"]}
    assert await csv_ids(api, t, "/api/v1/assignments") == {a_current, a_past, a_future}

    # Filters cannot widen the view.
    assert await ids(api, t, "/api/v1/assignments", driver_id=colleague["id"]) == set()
    assert await ids(api, t, "/api/v1/assignments", vehicle_id=theirs["id"]) == set()
    assert await ids(api, t, "/api/v1/drivers", q=colleague["last_name"]) == set()
    assert await ids(api, t, "/api/v1/vehicles", status="active") == {current["id"]}

    ok = [
        f"/api/v1/drivers/{me['id']}",
        f"/api/v1/vehicles/{current['id']}",
        f"/api/v1/assignments/{a_current}",
        f"/api/v1/assignments/{a_past}",
    ]
    for path in ok:
        r = await api.client.get(path, headers=t.headers("driver"))
        assert r.status_code == 200, (path, r.text)
    hidden = [
        f"/api/v1/drivers/{colleague['id']}",
        f"/api/v1/vehicles/{past['id']}",
        f"/api/v1/vehicles/{future['id']}",
        f"/api/v1/vehicles/{theirs['id']}",
        f"/api/v1/vehicles/{idle['id']}",
        f"/api/v1/assignments/{a_theirs}",
    ]
    for path in hidden:
        r = await api.client.get(path, headers=t.headers("driver"))
        assert_problem(r, 404, "not-found")

    # Meter readings only on the vehicle they drive now.
    r = await api.client.post(
        f"/api/v1/vehicles/{current['id']}/meters",
        json={"odometer_m": 99_000},
        headers=t.headers("driver"),
    )
    assert r.status_code == 200, r.text
    r = await api.client.post(
        f"/api/v1/vehicles/{theirs['id']}/meters",
        json={"odometer_m": 99_000},
        headers=t.headers("driver"),
    )
    assert_problem(r, 404, "not-found")
    r = await api.client.get(f"/api/v1/vehicles/{theirs['id']}", headers=t.headers())
    assert r.json()["odometer_m"] == theirs["odometer_m"]

    # Reading is all they do.
    for method, path, body in (
        ("POST", "/api/v1/vehicles", {}),
        ("PATCH", f"/api/v1/vehicles/{current['id']}", {"make": "X"}),
        ("PATCH", f"/api/v1/drivers/{me['id']}", {"phone": "+15550100"}),
        ("POST", "/api/v1/assignments", {}),
        ("DELETE", f"/api/v1/assignments/{a_current}", None),
        ("GET", "/api/v1/devices", None),
        ("GET", "/api/v1/audit-events", None),
    ):
        r = await api.client.request(method, path, json=body, headers=t.headers("driver"))
        assert_problem(r, 403, "forbidden")

    # Once the assignment ends, the vehicle disappears from their view.
    r = await api.client.patch(
        f"/api/v1/assignments/{a_current}", json={"ends_at": when(-0.5)}, headers=t.headers()
    )
    assert r.status_code == 200, r.text
    assert await ids(api, t, "/api/v1/vehicles") == set()
    r = await api.client.get(f"/api/v1/vehicles/{current['id']}", headers=t.headers("driver"))
    assert_problem(r, 404, "not-found")
    assert await ids(api, t, "/api/v1/assignments") == {a_current, a_past, a_future}
