"""List filters as a fleet manager uses them: any case for names, several values at once, a
total count for dashboards, CSV by Accept header."""

from __future__ import annotations

import csv
import io

from tests.kit.app import Api
from tests.kit.factories import new_driver, new_vehicle
from tests.kit.problems import assert_problem

V = "/api/v1/vehicles"


async def test_names_match_whatever_their_case(api: Api) -> None:
    t = await api.tenant(roles=["admin"])
    ford = await new_vehicle(api, t, make="Ford", model="F-150", department="Public Works")
    await new_vehicle(api, t, make="Toyota", model="Prius", department="Parks")
    for params in (
        {"make": "ford"},
        {"make": "FORD"},
        {"model": "f-150"},
        {"department": "public works"},
        {"make": "Ford", "department": "PUBLIC WORKS"},
    ):
        r = await api.client.get(V, params=params, headers=t.headers())
        assert [v["id"] for v in r.json()["data"]] == [ford["id"]], params


async def test_several_values_of_an_enumeration(api: Api) -> None:
    t = await api.tenant(roles=["admin"])
    ids = {
        status: (await new_vehicle(api, t, status=status))["id"]
        for status in ("active", "in_shop", "retired")
    }
    r = await api.client.get(V, params={"status": "active,in_shop"}, headers=t.headers())
    assert {v["id"] for v in r.json()["data"]} == {ids["active"], ids["in_shop"]}
    r = await api.client.get(V, params={"status": "retired"}, headers=t.headers())
    assert [v["id"] for v in r.json()["data"]] == [ids["retired"]]
    for bad in ("stolen", "active,", "active,,retired", "active;retired"):
        r = await api.client.get(V, params={"status": bad}, headers=t.headers())
        assert_problem(r, 422, "validation-error")
    await new_driver(api, t, status="suspended")
    r = await api.client.get(
        "/api/v1/drivers", params={"status": "active,suspended"}, headers=t.headers()
    )
    assert [d["status"] for d in r.json()["data"]] == ["suspended"]


async def test_a_total_count_on_request(api: Api) -> None:
    t = await api.tenant(roles=["admin"])
    for _ in range(3):
        await new_vehicle(api, t, status="in_shop")
    await new_vehicle(api, t)
    r = await api.client.get(V, params={"limit": 1}, headers=t.headers())
    assert r.json()["pagination"]["total"] is None  # counting costs a query: only on request
    r = await api.client.get(
        V, params={"limit": 1, "count": "true", "status": "in_shop"}, headers=t.headers()
    )
    page = r.json()
    assert len(page["data"]) == 1
    assert page["pagination"]["total"] == 3
    # Another tenant's vehicles are not counted.
    other = await api.tenant(roles=["admin"])
    r = await api.client.get(V, params={"count": "true"}, headers=other.headers())
    assert r.json()["pagination"]["total"] == 0


async def test_csv_by_accept_header(api: Api) -> None:
    t = await api.tenant(roles=["admin"])
    v = await new_vehicle(api, t)
    r = await api.client.get(V, headers={**t.headers(), "Accept": "text/csv"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [row["id"] for row in rows] == [v["id"]]
    assert rows[0]["vin_nonstandard"] == "false"
    # An explicit format wins over the header; a browser's Accept stays JSON.
    r = await api.client.get(
        V, params={"format": "json"}, headers={**t.headers(), "Accept": "text/csv"}
    )
    assert r.headers["content-type"].startswith("application/json")
    r = await api.client.get(
        V, headers={**t.headers(), "Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
    )
    assert r.headers["content-type"].startswith("application/json")
