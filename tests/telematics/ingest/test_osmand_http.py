"""OsmAnd over HTTP through the whole pipeline: the answer a phone gets, what is stored, and
what is refused (and never stored)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from ctafleet.observability.metrics import INGEST_POINTS
from tests.kit.app import Api, TenantUsers
from tests.telematics.ingest.kit import OSMAND, device, drain, last_position, positions

pytestmark = pytest.mark.asyncio


def _epoch(api: Api, offset_s: float = 0) -> int:
    return int(api.clock.now().timestamp() + offset_s)


async def test_a_position_sent_with_the_credential_in_the_query_is_stored(
    api: Api, tenant: TenantUsers
) -> None:
    d = await device(api, tenant)
    t0 = _epoch(api, -60)
    r = await api.client.get(
        OSMAND,
        params={
            "id": d["unique_id"],
            "token": d["credential"],
            "lat": "52.5200",
            "lon": "13.4050",
            "timestamp": str(t0),
            "speed": "10",  # knots
            "bearing": "90",
            "batt": "81",
            "cell": "262,1,1234,5678",
        },
    )
    assert r.status_code == 200, r.text
    assert r.content == b""
    assert await drain(api) == 1
    [row] = await positions(api, d["id"])
    assert row.fix_time == datetime.fromtimestamp(t0, UTC)
    assert (row.lat, row.lon) == (52.52, 13.405)
    assert row.speed_mps == pytest.approx(5.1444, abs=1e-3)
    assert row.battery_pct == 81
    assert row.attributes == {"cell": "262,1,1234,5678"}
    assert str(row.tenant_id) == str(tenant.id)
    last = await last_position(api, d["id"])
    assert last is not None
    assert last.fix_time == row.fix_time
    assert last.lat == 52.52


@pytest.mark.parametrize("how", ["path", "bearer", "form-body"])
async def test_the_credential_may_come_in_the_path_a_bearer_header_or_a_form_body(
    api: Api, tenant: TenantUsers, how: str
) -> None:
    d = await device(api, tenant)
    fields = {"id": d["unique_id"], "lat": "48.1", "lon": "11.5", "timestamp": str(_epoch(api))}
    if how == "path":
        r = await api.client.post(f"{OSMAND}/{d['credential']}", params=fields)
    elif how == "bearer":
        r = await api.client.get(
            OSMAND, params=fields, headers={"Authorization": f"Bearer {d['credential']}"}
        )
    else:  # Traccar Client 10: a form body, the credential among its fields
        r = await api.client.post(OSMAND, data={**fields, "token": d["credential"]})
    assert r.status_code == 200, r.text
    await drain(api)
    assert len(await positions(api, d["id"])) == 1


async def test_traccar_client_9_json_is_stored(api: Api, tenant: TenantUsers) -> None:
    d = await device(api, tenant)
    body = {
        "device_id": d["unique_id"],
        "location": {
            "timestamp": "2025-12-31T23:59:00.000Z",
            "coords": {"latitude": 40.0, "longitude": -3.7, "speed": 3.0, "accuracy": 8},
            "battery": {"level": 0.5, "is_charging": True},
            "is_moving": True,
        },
    }
    r = await api.client.post(f"{OSMAND}/{d['credential']}", json=body)
    assert r.status_code == 200, r.text
    await drain(api)
    [row] = await positions(api, d["id"])
    assert (row.speed_mps, row.battery_pct, row.charging) == (3.0, 50.0, True)


async def test_the_same_fix_sent_twice_is_stored_once(api: Api, tenant: TenantUsers) -> None:
    d = await device(api, tenant)
    params = {"id": d["unique_id"], "token": d["credential"], "lat": "1.5", "lon": "2.5"}
    params["timestamp"] = str(_epoch(api, -5))
    for _ in range(3):
        assert (await api.client.get(OSMAND, params=params)).status_code == 200
    await drain(api)
    # and again, in a later batch
    assert (await api.client.get(OSMAND, params=params)).status_code == 200
    assert await drain(api) == 0
    assert len(await positions(api, d["id"])) == 1


async def test_zero_coordinates_are_stored_invalid_and_do_not_move_the_vehicle(
    api: Api, tenant: TenantUsers
) -> None:
    d = await device(api, tenant)
    base = {"id": d["unique_id"], "token": d["credential"]}
    await api.client.get(
        OSMAND, params={**base, "lat": "10", "lon": "20", "timestamp": str(_epoch(api, -10))}
    )
    await api.client.get(
        OSMAND, params={**base, "lat": "0", "lon": "0", "timestamp": str(_epoch(api, -5))}
    )
    await drain(api)
    rows = await positions(api, d["id"])
    assert [r.valid for r in rows] == [True, False]
    last = await last_position(api, d["id"])
    assert last is not None
    assert (last.lat, last.lon) == (10.0, 20.0)
    assert last.fix_time == rows[0].fix_time
    assert last.last_message_at == api.clock.now()  # heard from now, whatever its fix time


async def test_a_heartbeat_updates_the_last_contact_only(api: Api, tenant: TenantUsers) -> None:
    d = await device(api, tenant)
    r = await api.client.get(OSMAND, params={"id": d["unique_id"], "token": d["credential"]})
    assert r.status_code == 200, r.text
    await drain(api)
    assert await positions(api, d["id"]) == []
    last = await last_position(api, d["id"])
    assert last is not None
    assert last.fix_time is None
    assert last.last_message_at == api.clock.now()
    got = await api.client.get(f"/api/v1/devices/{d['id']}", headers=tenant.headers())
    assert got.json()["last_seen_at"] is not None
    # Contact is no edit: the device's ETag (its version) did not move.
    assert got.json()["version"] == d["version"]


def _refused(reason: str) -> float:
    return INGEST_POINTS.labels("osmand", "rejected", reason)._value.get()  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("credential", "expected"),
    [
        (None, 401),
        ("ctd_wrong-credential-of-nobody", 401),
    ],
)
async def test_a_missing_or_wrong_credential_is_a_401_and_nothing_is_stored(
    api: Api, tenant: TenantUsers, credential: str | None, expected: int
) -> None:
    d = await device(api, tenant)
    params = {"id": d["unique_id"], "lat": "1", "lon": "2", "timestamp": str(_epoch(api))}
    if credential:
        params["token"] = credential
    before = _refused("unauthorized")
    r = await api.client.get(OSMAND, params=params)
    assert r.status_code == expected
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"] == "/problems/device-unauthorized"
    assert _refused("unauthorized") == before + 1
    await drain(api)
    assert await positions(api, d["id"]) == []


async def test_a_credential_of_another_device_is_refused(api: Api, tenant: TenantUsers) -> None:
    a, b = await device(api, tenant), await device(api, tenant)
    r = await api.client.get(
        OSMAND, params={"id": b["unique_id"], "token": a["credential"], "lat": "1", "lon": "1"}
    )
    assert r.status_code == 401
    await drain(api)
    assert await positions(api, a["id"]) == []
    assert await positions(api, b["id"]) == []


async def test_another_tenants_credential_cannot_write_to_this_tenants_device(
    api: Api, tenant: TenantUsers
) -> None:
    other = await api.tenant(roles=["admin"])
    mine = await device(api, tenant)
    theirs = await device(api, other, unique_id=mine["unique_id"])  # ids are per tenant
    r = await api.client.get(
        OSMAND,
        params={"id": mine["unique_id"], "token": theirs["credential"], "lat": "5", "lon": "5"},
    )
    assert r.status_code == 200  # it is their device, with their credential
    await drain(api)
    assert await positions(api, mine["id"]) == []
    [row] = await positions(api, theirs["id"])
    assert str(row.tenant_id) == str(other.id)


async def test_a_rotated_credential_stops_working_within_the_cache_time(
    api: Api, tenant: TenantUsers
) -> None:
    d = await device(api, tenant)
    params = {"id": d["unique_id"], "token": d["credential"], "lat": "1", "lon": "1"}
    assert (await api.client.get(OSMAND, params=params)).status_code == 200
    r = await api.client.post(
        f"/api/v1/devices/{d['id']}/rotate-credential", headers=tenant.headers()
    )
    assert r.status_code == 200
    api.clock.advance(api.settings.telemetry.credential_cache_ttl_s + 1)
    assert (await api.client.get(OSMAND, params=params)).status_code == 401
    params["token"] = r.json()["credential"]
    assert (await api.client.get(OSMAND, params=params)).status_code == 200
    await drain(api)


async def test_a_deactivated_device_is_refused(api: Api, tenant: TenantUsers) -> None:
    d = await device(api, tenant)
    r = await api.client.patch(
        f"/api/v1/devices/{d['id']}", json={"is_active": False}, headers=tenant.headers()
    )
    assert r.status_code == 200, r.text
    api.clock.advance(api.settings.telemetry.credential_cache_ttl_s + 1)
    r = await api.client.get(
        OSMAND, params={"id": d["unique_id"], "token": d["credential"], "lat": "1", "lon": "1"}
    )
    assert r.status_code == 401


@pytest.mark.parametrize(
    ("params", "slug"),
    [
        ({"lat": "1", "lon": "1"}, "osmand-missing-id"),
        ({"id": "x", "lat": "91", "lon": "1"}, "osmand-bad-coordinates"),
        ({"id": "x", "lat": "1", "lon": "1", "timestamp": "yesterday"}, "osmand-bad-timestamp"),
    ],
)
async def test_a_message_that_does_not_parse_is_a_400(
    api: Api, params: dict[str, str], slug: str
) -> None:
    r = await api.client.get(OSMAND, params=params)
    assert r.status_code == 400, r.text
    assert r.json()["type"] == f"/problems/{slug}"


async def test_a_fix_from_the_future_is_refused(api: Api, tenant: TenantUsers) -> None:
    d = await device(api, tenant)
    r = await api.client.get(
        OSMAND,
        params={
            "id": d["unique_id"],
            "token": d["credential"],
            "lat": "1",
            "lon": "1",
            "timestamp": str(_epoch(api, 3600)),
        },
    )
    assert r.status_code == 400
    assert r.json()["type"] == "/problems/osmand-future-fix"


async def test_a_body_over_the_limit_is_a_400_not_a_dropped_connection(api: Api) -> None:
    r = await api.client.post(OSMAND, content=b"id=x&" + b"a" * 70_000)
    assert r.status_code == 400
    assert r.json()["type"] == "/problems/osmand-too-large"


async def test_a_path_that_only_starts_like_the_endpoint_is_not_it(api: Api) -> None:
    r = await api.client.get("/ingest/osmandx", params={"id": "x"})
    assert r.status_code == 404


async def test_an_in_process_queue_is_stored_before_the_worker_exits(
    api: Api, tenant: TenantUsers
) -> None:
    """Without Redis the acknowledged points live in the API's memory: a shutdown (SIGTERM)
    stores them all before the process goes, not just the batch in hand."""
    d = await device(api, tenant)
    worker = api.app.state.ctafleet.telemetry.worker
    worker_batch = worker.batch_entries
    worker.batch_entries = 2  # several batches wait, so the batch in hand is not all of it
    try:
        for second in range(7):
            r = await api.client.get(
                OSMAND,
                params={
                    "id": d["unique_id"],
                    "token": d["credential"],
                    "lat": "41.9",
                    "lon": "-87.6",
                    "timestamp": str(1_750_000_000 + second),
                },
            )
            assert r.status_code == 200
        stop = asyncio.Event()
        stop.set()  # shutdown was asked before the worker took anything
        await worker.run(stop)
    finally:
        worker.batch_entries = worker_batch
    assert len(await positions(api, d["id"])) == 7
    assert await api.app.state.ctafleet.telemetry.queue.depth() == 0
