"""Drivers: CRUD, employee-number uniqueness, linking to a login user, audit."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.kit.app import Api
from tests.kit.factories import audit_events, driver_body, new_driver, vehicle_body
from tests.kit.problems import assert_problem

D = "/api/v1/drivers"


async def test_create_read_update_list(api: Api) -> None:
    t = await api.tenant(roles=["admin", "viewer"])
    body = driver_body(email="ada@example.org", phone="+1 (312) 555-0100")
    r = await api.client.post(D, json=body, headers=t.headers())
    assert r.status_code == 201, r.text
    created = r.json()
    assert r.headers["Location"] == f"{D}/{created['id']}"
    assert r.headers["ETag"] == '"v1"'
    for key in ("first_name", "last_name", "employee_number", "licence_expiry", "email"):
        assert created[key] == body[key]
    assert created["status"] == "active"
    assert created["user_id"] is None

    r = await api.client.get(f"{D}/{created['id']}", headers=t.headers("viewer"))
    assert r.status_code == 200, r.text
    assert r.json() == created

    r = await api.client.patch(
        f"{D}/{created['id']}",
        json={"status": "suspended", "phone": None, "licence_expiry": "2031-12-31"},
        headers={**t.headers(), "If-Match": '"v1"'},
    )
    assert r.status_code == 200, r.text
    assert r.headers["ETag"] == '"v2"'
    updated = r.json()
    assert (updated["status"], updated["phone"], updated["licence_expiry"]) == (
        "suspended",
        None,
        "2031-12-31",
    )
    r = await api.client.patch(
        f"{D}/{created['id']}",
        json={"first_name": "X"},
        headers={**t.headers(), "If-Match": '"v1"'},
    )
    assert_problem(r, 412, "precondition-failed")

    other = await new_driver(api, t, last_name="Zed")
    r = await api.client.get(D, params={"status": "suspended"}, headers=t.headers("viewer"))
    assert [d["id"] for d in r.json()["data"]] == [created["id"]]
    r = await api.client.get(D, params={"q": "zE"}, headers=t.headers("viewer"))
    assert [d["id"] for d in r.json()["data"]] == [other["id"]]
    r = await api.client.get(D, params={"q": "Z\u0000"}, headers=t.headers("viewer"))
    assert_problem(r, 422, "validation-error")
    r = await api.client.get(
        D, params={"licence_expires_before": "2030-06-01"}, headers=t.headers("viewer")
    )
    assert [d["id"] for d in r.json()["data"]] == [other["id"]]

    r = await api.client.post(D, json=driver_body(), headers=t.headers("viewer"))
    assert_problem(r, 403, "forbidden")
    r = await api.client.patch(
        f"{D}/{other['id']}", json={"first_name": "Y"}, headers=t.headers("viewer")
    )
    assert_problem(r, 403, "forbidden")

    events = await audit_events(api, t, "driver", created["id"])
    assert [e["action"] for e in events] == ["create", "update"]
    assert events[1]["changes"]["status"] == {"before": "active", "after": "suspended"}


async def test_validation_errors_are_422(api: Api) -> None:
    t = await api.tenant(roles=["admin"])
    bad: list[dict[str, Any]] = [
        driver_body(email="not-an-email"),
        driver_body(phone="call me"),
        driver_body(status="retired"),
        driver_body(licence_expiry="someday"),
        driver_body(licence_expiry="2030-02-30"),
        driver_body(user_id="not-a-uuid"),
        driver_body(nickname="Ada"),
        driver_body(first_name=""),
        driver_body(employee_number="E" * 33),
        driver_body(last_name="Lovelace\u0000"),
        {k: v for k, v in driver_body().items() if k != "licence_number"},
    ]
    for body in bad:
        r = await api.client.post(D, json=body, headers=t.headers())
        assert_problem(r, 422, "validation-error")
    d = await new_driver(api, t)
    for patch in ({"first_name": None}, {"status": None}, {"licence_expiry": None}, {"x": 1}):
        r = await api.client.patch(f"{D}/{d['id']}", json=patch, headers=t.headers())
        assert_problem(r, 422, "validation-error")
    r = await api.client.get(f"{D}/{d['id']}", headers=t.headers())
    assert r.json() == d


async def test_employee_number_is_unique_per_tenant(api: Api) -> None:
    t = await api.tenant(roles=["admin"])
    other = await api.tenant(roles=["admin"])
    d = await new_driver(api, t, employee_number="E-1")
    r = await api.client.post(D, json=driver_body(employee_number="E-1"), headers=t.headers())
    assert_problem(r, 409, "duplicate-employee-number")
    await new_driver(api, other, employee_number="E-1")

    e = await new_driver(api, t, employee_number="E-2")
    r = await api.client.patch(
        f"{D}/{e['id']}", json={"employee_number": "E-1"}, headers=t.headers()
    )
    assert_problem(r, 409, "duplicate-employee-number")
    r = await api.client.patch(
        f"{D}/{d['id']}", json={"employee_number": "E-1"}, headers=t.headers()
    )
    assert r.status_code == 200, r.text


async def test_concurrent_creates_with_one_employee_number(api: Api) -> None:
    t = await api.tenant(roles=["admin"])
    responses = await asyncio.gather(
        *(
            api.client.post(
                D,
                json=driver_body(employee_number="SAME", licence_number=f"L{i}"),
                headers=t.headers(),
            )
            for i in range(4)
        )
    )
    assert sorted(r.status_code for r in responses) == [201, 409, 409, 409], [
        r.text for r in responses
    ]
    for r in responses:
        if r.status_code == 409:
            assert_problem(r, 409, "duplicate-employee-number")


async def test_linking_users(api: Api) -> None:
    t = await api.tenant(roles=["admin", "driver"])
    other = await api.tenant(roles=["driver"])
    mine, foreign = t.users["driver"], other.users["driver"]

    r = await api.client.post(D, json=driver_body(user_id=str(foreign.id)), headers=t.headers())
    assert_problem(r, 404, "not-found")

    d = await new_driver(api, t, user_id=str(mine.id))
    assert d["user_id"] == str(mine.id)
    r = await api.client.post(D, json=driver_body(user_id=str(mine.id)), headers=t.headers())
    assert_problem(r, 409, "user-already-linked")

    e = await new_driver(api, t)
    r = await api.client.patch(
        f"{D}/{e['id']}", json={"user_id": str(mine.id)}, headers=t.headers()
    )
    assert_problem(r, 409, "user-already-linked")
    r = await api.client.patch(
        f"{D}/{e['id']}", json={"user_id": str(foreign.id)}, headers=t.headers()
    )
    assert_problem(r, 404, "not-found")
    r = await api.client.patch(
        f"{D}/{e['id']}",
        json={"user_id": "00000000-0000-4000-8000-000000000000"},
        headers=t.headers(),
    )
    assert_problem(r, 404, "not-found")
    # Re-linking a driver to its own user is no conflict.
    r = await api.client.patch(
        f"{D}/{d['id']}", json={"user_id": str(mine.id)}, headers=t.headers()
    )
    assert r.status_code == 200, r.text

    # Unlink, then the user is free for another driver.
    r = await api.client.patch(f"{D}/{d['id']}", json={"user_id": None}, headers=t.headers())
    assert r.status_code == 200, r.text
    assert r.json()["user_id"] is None
    r = await api.client.patch(
        f"{D}/{e['id']}", json={"user_id": str(mine.id)}, headers=t.headers()
    )
    assert r.status_code == 200, r.text
    assert r.json()["user_id"] == str(mine.id)

    # The probes of the other tenant's user are in that tenant's audit log, not in ours.
    r = await api.client.get(
        "/api/v1/audit-events",
        params={"action": "cross_tenant_access_denied"},
        headers=t.headers(),
    )
    assert r.json()["data"] == []
    events = await audit_events(api, t, "driver", e["id"])
    assert [ev["action"] for ev in events] == ["create", "update"]
    assert events[1]["changes"]["user_id"] == {"before": None, "after": str(mine.id)}


async def test_other_tenants_driver_is_404(api: Api) -> None:
    owner = await api.tenant(roles=["admin"])
    prober = await api.tenant(roles=["admin"])
    d = await new_driver(api, owner)
    r = await api.client.get(f"{D}/{d['id']}", headers=prober.headers())
    assert_problem(r, 404, "not-found")
    r = await api.client.patch(f"{D}/{d['id']}", json={"first_name": "X"}, headers=prober.headers())
    assert_problem(r, 404, "not-found")
    r = await api.client.get(D, headers=prober.headers())
    assert r.json()["data"] == []
    r = await api.client.get(f"{D}/{d['id']}", headers=owner.headers())
    assert r.json() == d
    actions = [e["action"] for e in await audit_events(api, owner, "driver", d["id"])]
    assert actions == ["create", "cross_tenant_access_denied", "cross_tenant_access_denied"]


async def test_dates_are_text_not_numbers(api: Api) -> None:
    """`"licence_expiry": 0` would be read as seconds since 1970 and stored as 1970-01-01."""
    t = await api.tenant(roles=["admin"])
    for value in (0, 1735689600, 2030.5):
        r = await api.client.post(
            "/api/v1/drivers", json=driver_body(licence_expiry=value), headers=t.headers()
        )
        problem = assert_problem(r, 422, "validation-error")
        assert problem["errors"][0]["loc"][-1] == "licence_expiry"
    d = await new_driver(api, t)
    r = await api.client.patch(
        f"/api/v1/drivers/{d['id']}", json={"licence_expiry": 0}, headers=t.headers()
    )
    assert_problem(r, 422, "validation-error")
    r = await api.client.post(
        "/api/v1/vehicles",
        json=vehicle_body(purchase_date=0),
        headers=t.headers(),
    )
    assert_problem(r, 422, "validation-error")
