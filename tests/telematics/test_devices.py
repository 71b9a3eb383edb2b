"""Telematics devices: registration, the credential shown once, rotation, binding, audit."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import uuid
from typing import Any

from sqlalchemy import select

from ctafleet.telematics import service
from ctafleet.telematics.models import Device
from tests.kit.app import Api, TenantUsers
from tests.kit.factories import audit_events, new_device, new_vehicle
from tests.kit.problems import assert_problem

DV = "/api/v1/devices"


async def register(api: Api, t: TenantUsers, **body: Any) -> dict[str, Any]:
    body.setdefault("unique_id", f"imei-{uuid.uuid4().hex[:15]}")
    r = await api.client.post(DV, json=body, headers=t.headers())
    assert r.status_code == 201, r.text
    data: dict[str, Any] = r.json()
    return data


async def stored_row(api: Api, device_id: str) -> dict[str, Any]:
    async with api.db.system_session() as session:
        device = (
            await session.scalars(select(Device).where(Device.id == uuid.UUID(device_id)))
        ).one()
        return {c.key: getattr(device, c.key) for c in Device.__table__.columns}


async def authenticate(api: Api, unique_id: str, credential: str) -> Device | None:
    async with api.db.system_session() as session:
        return await service.authenticate_device(
            session=session, credential=credential, unique_id=unique_id
        )


async def test_credential_is_shown_once_and_stored_as_a_digest(api: Api) -> None:
    t = await api.tenant(roles=["admin", "viewer"])
    v = await new_vehicle(api, t)
    r = await api.client.post(
        DV,
        json={
            "unique_id": "356938035643809",
            "name": "Van 1",
            "protocol": "osmand",
            "vehicle_id": v["id"],
        },
        headers=t.headers(),
    )
    assert r.status_code == 201, r.text
    created = r.json()
    credential = created["credential"]
    assert re.fullmatch(r"ctd_[A-Za-z0-9_-]{43}", credential), credential
    assert created["credential_prefix"] == credential[:10]
    assert r.headers["Location"] == f"{DV}/{created['id']}"
    assert r.headers["ETag"] == '"v1"'
    assert (created["vehicle_id"], created["is_active"]) == (v["id"], True)
    assert "credential_hash" not in created

    for path in (f"{DV}/{created['id']}", DV, f"{DV}?format=csv"):
        r = await api.client.get(path, headers=t.headers("viewer"))
        assert r.status_code == 200, r.text
        assert credential not in r.text
        assert credential[10:] not in r.text
        assert "credential_hash" not in r.text
    r = await api.client.get(f"{DV}/{created['id']}", headers=t.headers("viewer"))
    assert "credential" not in r.json()
    assert r.json()["credential_prefix"] == credential[:10]

    row = await stored_row(api, created["id"])
    assert row["credential_hash"] == hashlib.sha256(credential.encode()).hexdigest()
    assert re.fullmatch(r"[0-9a-f]{64}", row["credential_hash"])
    assert not any(credential in str(value) for value in row.values())

    events = await audit_events(api, t, "device", created["id"])
    assert [e["action"] for e in events] == ["create"]
    assert credential not in json.dumps(events)
    assert row["credential_hash"] not in json.dumps(events)

    device = await authenticate(api, "356938035643809", credential)
    assert device is not None
    assert str(device.id) == created["id"]
    assert await authenticate(api, "356938035643809", credential + "x") is None
    assert await authenticate(api, "356938035643809", row["credential_hash"]) is None
    assert await authenticate(api, "356938035643810", credential) is None


async def test_rotation_replaces_the_credential(api: Api) -> None:
    t = await api.tenant(roles=["admin"])
    d = await register(api, t)
    old = d["credential"]
    r = await api.client.post(f"{DV}/{d['id']}/rotate-credential", headers=t.headers())
    assert r.status_code == 200, r.text
    new = r.json()["credential"]
    assert new != old
    assert r.json()["credential_prefix"] == new[:10]
    assert r.json()["version"] == 2
    assert r.headers["ETag"] == '"v2"'

    assert await authenticate(api, d["unique_id"], new) is not None
    assert await authenticate(api, d["unique_id"], old) is None
    row = await stored_row(api, d["id"])
    assert row["credential_hash"] == hashlib.sha256(new.encode()).hexdigest()

    r = await api.client.get(f"{DV}/{d['id']}", headers=t.headers())
    assert new not in r.text

    # A deactivated device is refused even with the right credential.
    r = await api.client.patch(f"{DV}/{d['id']}", json={"is_active": False}, headers=t.headers())
    assert r.status_code == 200, r.text
    assert await authenticate(api, d["unique_id"], new) is None

    events = await audit_events(api, t, "device", d["id"])
    assert [e["action"] for e in events] == ["create", "rotate_credential", "update"]
    assert new not in json.dumps(events)
    assert old not in json.dumps(events)


async def test_unique_id_is_unique_within_a_tenant_only(api: Api) -> None:
    t = await api.tenant(roles=["admin"])
    other = await api.tenant(roles=["admin"])
    d = await register(api, t)
    r = await api.client.post(DV, json={"unique_id": d["unique_id"]}, headers=t.headers())
    problem = assert_problem(r, 409, "duplicate-device")
    assert d["unique_id"] in problem["detail"]
    # Another tenant registers the same id as its own, and learns nothing of the first: no 409
    # that would tell it the id exists elsewhere, and only its own device in its list.
    r = await api.client.post(DV, json={"unique_id": d["unique_id"]}, headers=other.headers())
    assert r.status_code == 201, r.text
    mine = r.json()
    r = await api.client.get(DV, headers=other.headers())
    assert [x["id"] for x in r.json()["data"]] == [mine["id"]]
    # Each credential still names its own device.
    found = await authenticate(api, d["unique_id"], mine["credential"])
    assert found is not None
    assert str(found.id) == mine["id"]
    assert await authenticate(api, d["unique_id"], "ctd_" + "x" * 43) is None


async def test_concurrent_registrations_of_one_unique_id(api: Api) -> None:
    t = await api.tenant(roles=["admin"])
    other = await api.tenant(roles=["admin"])
    unique_id = f"race-{uuid.uuid4().hex[:12]}"
    responses = await asyncio.gather(
        *(
            api.client.post(DV, json={"unique_id": unique_id}, headers=tenant.headers())
            for tenant in (t, other, t, other)
        )
    )
    # One registration per tenant wins; the loser in each tenant is a clean 409.
    assert sorted(r.status_code for r in responses) == [201, 201, 409, 409], [
        r.text for r in responses
    ]
    for r in responses:
        if r.status_code == 409:
            assert_problem(r, 409, "duplicate-device")


async def test_binding_to_vehicles(api: Api) -> None:
    t = await api.tenant(roles=["admin"])
    other = await api.tenant(roles=["admin"])
    mine, theirs = await new_vehicle(api, t), await new_vehicle(api, other)

    r = await api.client.post(
        DV, json={"unique_id": "bind-test-1", "vehicle_id": theirs["id"]}, headers=t.headers()
    )
    assert_problem(r, 404, "not-found")
    r = await api.client.post(
        DV,
        json={"unique_id": "bind-test-1", "vehicle_id": "00000000-0000-4000-8000-000000000000"},
        headers=t.headers(),
    )
    assert_problem(r, 404, "not-found")

    d = await register(api, t)
    r = await api.client.patch(
        f"{DV}/{d['id']}", json={"vehicle_id": theirs["id"]}, headers=t.headers()
    )
    assert_problem(r, 404, "not-found")
    r = await api.client.patch(
        f"{DV}/{d['id']}",
        json={"vehicle_id": mine["id"]},
        headers={**t.headers(), "If-Match": '"v1"'},
    )
    assert r.status_code == 200, r.text
    assert r.json()["vehicle_id"] == mine["id"]
    assert r.headers["ETag"] == '"v2"'
    r = await api.client.patch(
        f"{DV}/{d['id']}", json={"name": "stale"}, headers={**t.headers(), "If-Match": '"v1"'}
    )
    assert_problem(r, 412, "precondition-failed")

    r = await api.client.get(DV, params={"vehicle_id": mine["id"]}, headers=t.headers())
    assert [x["id"] for x in r.json()["data"]] == [d["id"]]
    r = await api.client.patch(f"{DV}/{d['id']}", json={"vehicle_id": None}, headers=t.headers())
    assert r.status_code == 200, r.text
    assert r.json()["vehicle_id"] is None
    r = await api.client.get(DV, params={"vehicle_id": mine["id"]}, headers=t.headers())
    assert r.json()["data"] == []

    # The other tenant's vehicle is untouched and its owner sees the probes.
    events = await audit_events(api, other, "vehicle", theirs["id"])
    assert [e["action"] for e in events].count("cross_tenant_access_denied") == 2
    events = await audit_events(api, t, "device", d["id"])
    assert [e["action"] for e in events] == ["create", "update", "update"]
    assert events[1]["changes"]["vehicle_id"] == {"before": None, "after": mine["id"]}


async def test_permissions_and_validation(api: Api) -> None:
    t = await api.tenant(roles=["admin", "viewer"])
    d = await register(api, t)
    viewer = t.headers("viewer")
    r = await api.client.post(DV, json={"unique_id": "viewer-made"}, headers=viewer)
    assert_problem(r, 403, "forbidden")
    r = await api.client.post(f"{DV}/{d['id']}/rotate-credential", headers=viewer)
    assert_problem(r, 403, "forbidden")
    r = await api.client.patch(f"{DV}/{d['id']}", json={"is_active": False}, headers=viewer)
    assert_problem(r, 403, "forbidden")
    r = await api.client.get(DV, headers=viewer)
    assert [x["id"] for x in r.json()["data"]] == [d["id"]]
    assert await authenticate(api, d["unique_id"], d["credential"]) is not None

    for body in (
        {"unique_id": "ab"},
        {"unique_id": "has space"},
        {"unique_id": "x" * 65},
        {"unique_id": "ok-id-1", "protocol": "teltonika"},
        {"unique_id": "ok-id-2", "credential": "chosen-by-me"},
        {"unique_id": "ok-id-3", "is_active": False},
        {"unique_id": "ok-id-4", "name": "Van\u0000"},
        {},
    ):
        r = await api.client.post(DV, json=body, headers=t.headers())
        assert_problem(r, 422, "validation-error")
    for patch in ({"is_active": None}, {"name": None}, {"unique_id": "new-id"}, {"protocol": "x"}):
        r = await api.client.patch(f"{DV}/{d['id']}", json=patch, headers=t.headers())
        assert_problem(r, 422, "validation-error")
    r = await api.client.get(DV, params={"protocol": "teltonika"}, headers=t.headers())
    assert_problem(r, 422, "validation-error")


# --- which device feeds the vehicle's meters ---------------------------------------------------


async def test_one_device_per_vehicle_feeds_its_meters(api: Api, tenant: TenantUsers) -> None:
    vehicle = await new_vehicle(api, tenant)
    tracker = await new_device(api, tenant, vehicle_id=vehicle["id"])
    phone = await new_device(api, tenant, vehicle_id=vehicle["id"])
    assert (tracker["feeds_meters"], phone["feeds_meters"]) == (True, False)
    # Two feeders would count every kilometre twice.
    r = await api.client.patch(
        f"{DV}/{phone['id']}", json={"feeds_meters": True}, headers=tenant.headers()
    )
    assert_problem(r, 409, "meters-fed-by-another-device")
    assert tracker["unique_id"] in r.json()["detail"]
    r = await api.client.post(
        DV,
        json={
            "unique_id": f"imei-{uuid.uuid4().hex[:12]}",
            "vehicle_id": vehicle["id"],
            "feeds_meters": True,
        },
        headers=tenant.headers(),
    )
    assert_problem(r, 409, "meters-fed-by-another-device")
    assert (
        await api.client.get(f"/api/v1/devices/{phone['id']}", headers=tenant.headers())
    ).json()["feeds_meters"] is False
    # Handing over: the tracker stops, then the phone may.
    for device, feeds in ((tracker, False), (phone, True)):
        r = await api.client.patch(
            f"/api/v1/devices/{device['id']}",
            json={"feeds_meters": feeds},
            headers=tenant.headers(),
        )
        assert r.status_code == 200, r.text
        assert r.json()["feeds_meters"] is feeds
    # Moved to a vehicle of its own, the tracker feeds that one's meters again.
    other = await new_vehicle(api, tenant)
    r = await api.client.patch(
        f"/api/v1/devices/{tracker['id']}",
        json={"vehicle_id": other["id"]},
        headers=tenant.headers(),
    )
    assert r.status_code == 200, r.text
    assert r.json()["feeds_meters"] is True
