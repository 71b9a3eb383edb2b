"""A tenant's telemetry policy (retention, ingest key) and id-only ingest through that key."""

from __future__ import annotations

import pytest

from ctafleet.observability.metrics import INGEST_POINTS
from ctafleet.telematics.derive.rules import TENANT_TUNABLE, Rules
from ctafleet.telematics.schemas import DeriveRulesUpdate
from tests.kit.app import Api, TenantUsers
from tests.kit.factories import audit_events
from tests.telematics.ingest.kit import OSMAND, device, drain, positions

pytestmark = pytest.mark.asyncio

POLICY = "/api/v1/telemetry/policy"
KEY = f"{POLICY}/ingest-key"


async def _own_tenant(api: Api) -> TenantUsers:
    # The policy is per tenant: a tenant of its own, so other tests' defaults stay put.
    return await api.tenant(roles=["admin", "fleet_manager", "viewer"])


def _refused() -> float:
    return INGEST_POINTS.labels("osmand", "rejected", "unauthorized")._value.get()  # type: ignore[no-any-return]


async def test_a_new_tenant_has_the_default_policy_at_version_0(api: Api) -> None:
    t = await _own_tenant(api)
    r = await api.client.get(POLICY, headers=t.headers("viewer"))
    assert r.status_code == 200, r.text
    assert r.json() == {
        "retention_days": api.settings.telemetry.retention_days,
        "ingest_key_prefix": None,
        "rules": Rules().tunable(),
        "version": 0,
    }
    assert r.headers["etag"] == '"v0"'


async def test_retention_is_set_with_if_match_and_audited(api: Api) -> None:
    t = await _own_tenant(api)
    etag = (await api.client.get(POLICY, headers=t.headers())).headers["etag"]
    r = await api.client.patch(
        POLICY, json={"retention_days": 30}, headers={**t.headers(), "If-Match": etag}
    )
    assert r.status_code == 200, r.text
    assert r.json()["retention_days"] == 30
    # Version 1 is the defaults as first stored (the audit's `create`), 2 this change.
    assert r.json()["version"] == 2
    # The defaults' tag no longer matches.
    r = await api.client.patch(
        POLICY, json={"retention_days": 60}, headers={**t.headers(), "If-Match": etag}
    )
    assert r.status_code == 412
    assert (await api.client.get(POLICY, headers=t.headers())).json()["retention_days"] == 30
    r = await api.client.patch(POLICY, json={"retention_days": 90}, headers=t.headers())
    assert r.status_code == 200
    assert r.json()["version"] == 3
    events = await audit_events(api, t, "telemetry_settings", t.id)
    assert [e["action"] for e in events] == ["create", "update", "update"]
    assert events[-1]["changes"]["retention_days"] == {"before": 30, "after": 90}


@pytest.mark.parametrize("days", [0, -1, 36501, "a year", None])
async def test_a_bad_retention_is_a_422_and_changes_nothing(api: Api, days: object) -> None:
    t = await _own_tenant(api)
    r = await api.client.patch(POLICY, json={"retention_days": days}, headers=t.headers())
    assert r.status_code == 422
    assert r.headers["content-type"] == "application/problem+json"
    assert (await api.client.get(POLICY, headers=t.headers())).json()["version"] == 0


@pytest.mark.parametrize("role", ["fleet_manager", "viewer"])
async def test_only_admins_change_the_policy(api: Api, role: str) -> None:
    t = await _own_tenant(api)
    r = await api.client.patch(POLICY, json={"retention_days": 7}, headers=t.headers(role))
    assert r.status_code == 403
    assert (await api.client.post(KEY, headers=t.headers(role))).status_code == 403
    assert (await api.client.delete(KEY, headers=t.headers(role))).status_code == 403
    assert (await api.client.get(POLICY, headers=t.headers())).json()["version"] == 0


async def test_an_ingest_key_is_shown_once_and_never_audited(api: Api) -> None:
    t = await _own_tenant(api)
    r = await api.client.post(KEY, headers=t.headers())
    assert r.status_code == 201, r.text
    key = r.json()["ingest_key"]
    assert key.startswith("cti_")
    assert len(key) > 40
    assert r.json()["osmand_path"] == f"/ingest/osmand/{key}"
    policy = (await api.client.get(POLICY, headers=t.headers("viewer"))).json()
    assert policy["ingest_key_prefix"] == key[:10]
    assert key not in str(policy)
    events = await audit_events(api, t, "telemetry_settings", t.id)
    assert [e["action"] for e in events] == ["create", "new_ingest_key"]
    assert events[-1]["changes"]["ingest_key_hash"]["after"] == "[redacted]"
    assert key not in str(events)
    assert key[4:] not in str(events)


async def test_an_id_only_device_sends_through_the_tenant_key(api: Api) -> None:
    t = await _own_tenant(api)
    legacy = await device(api, t, allow_id_only=True)
    assert legacy["allow_id_only"] is True
    other = await device(api, t)  # id-only is off by default
    assert other["allow_id_only"] is False
    path = (await api.client.post(KEY, headers=t.headers())).json()["osmand_path"]

    r = await api.client.get(
        path, params={"id": legacy["unique_id"], "lat": "41.9", "lon": "-87.6"}
    )
    assert r.status_code == 200, r.text
    # Traccar Client 10's form body reaches the same path.
    fields = {"deviceid": legacy["unique_id"], "lat": "41.91", "lon": "-87.61"}
    fields["timestamp"] = str(int(api.clock.now().timestamp()) - 30)
    r = await api.client.post(path, data=fields)
    assert r.status_code == 200, r.text

    before = _refused()
    r = await api.client.get(path, params={"id": other["unique_id"], "lat": "1", "lon": "1"})
    assert r.status_code == 401
    assert r.json()["type"] == "/problems/device-unauthorized"
    r = await api.client.get(path, params={"id": "nobody-has-this-id", "lat": "1", "lon": "1"})
    assert r.status_code == 401
    assert _refused() == before + 2
    await drain(api)
    assert len(await positions(api, legacy["id"])) == 2
    assert await positions(api, other["id"]) == []
    # Turned off for the device: refused once the cache has forgotten it.
    r = await api.client.patch(
        f"/api/v1/devices/{legacy['id']}", json={"allow_id_only": False}, headers=t.headers()
    )
    assert r.status_code == 200, r.text
    assert r.json()["allow_id_only"] is False
    api.clock.advance(api.settings.telemetry.credential_cache_ttl_s + 1)
    r = await api.client.get(path, params={"id": legacy["unique_id"], "lat": "1", "lon": "1"})
    assert r.status_code == 401


async def test_a_tenant_key_reaches_only_that_tenants_devices(api: Api) -> None:
    mine, theirs = await _own_tenant(api), await _own_tenant(api)
    target = await device(api, theirs, allow_id_only=True)
    await device(api, mine, allow_id_only=True)
    path = (await api.client.post(KEY, headers=mine.headers())).json()["osmand_path"]
    r = await api.client.get(path, params={"id": target["unique_id"], "lat": "1", "lon": "1"})
    assert r.status_code == 401
    await drain(api)
    assert await positions(api, target["id"]) == []


async def test_a_new_or_revoked_key_stops_the_old_one_within_the_cache_time(api: Api) -> None:
    t = await _own_tenant(api)
    d = await device(api, t, allow_id_only=True)
    params = {"id": d["unique_id"], "lat": "1", "lon": "1"}
    first = (await api.client.post(KEY, headers=t.headers())).json()["osmand_path"]
    assert (await api.client.get(first, params=params)).status_code == 200
    second = (await api.client.post(KEY, headers=t.headers())).json()["osmand_path"]
    api.clock.advance(api.settings.telemetry.credential_cache_ttl_s + 1)
    assert (await api.client.get(first, params=params)).status_code == 401
    assert (await api.client.get(second, params=params)).status_code == 200

    r = await api.client.delete(KEY, headers=t.headers())
    assert r.status_code == 204
    assert (await api.client.get(POLICY, headers=t.headers())).json()["ingest_key_prefix"] is None
    api.clock.advance(api.settings.telemetry.credential_cache_ttl_s + 1)
    assert (await api.client.get(second, params=params)).status_code == 401
    assert (await api.client.get(f"{OSMAND}/cti_made-up", params=params)).status_code == 401
    await drain(api)
    actions = [e["action"] for e in await audit_events(api, t, "telemetry_settings", t.id)]
    assert actions == ["create", "new_ingest_key", "new_ingest_key", "revoke_ingest_key"]


# --- the tenant's derivation thresholds ------------------------------------------------------


async def test_the_api_offers_exactly_the_thresholds_a_tenant_may_set() -> None:
    assert tuple(DeriveRulesUpdate.model_fields) == TENANT_TUNABLE


async def test_thresholds_are_set_with_if_match_reset_with_null_and_audited(api: Api) -> None:
    t = await _own_tenant(api)
    etag = (await api.client.get(POLICY, headers=t.headers())).headers["etag"]
    change = {"rules": {"speed_limit_mps": 25, "offline_after_s": 1800}}
    r = await api.client.patch(POLICY, json=change, headers={**t.headers(), "If-Match": etag})
    assert r.status_code == 200, r.text
    expected = {**Rules().tunable(), "speed_limit_mps": 25.0, "offline_after_s": 1800.0}
    assert r.json()["rules"] == expected
    assert r.json()["retention_days"] == api.settings.telemetry.retention_days  # untouched
    # A field left out stays; null returns one to its default.
    r = await api.client.patch(
        POLICY, json={"rules": {"speed_limit_mps": None, "idle_min_s": 600}}, headers=t.headers()
    )
    assert r.status_code == 200, r.text
    assert r.json()["rules"] == {**expected, "speed_limit_mps": None, "idle_min_s": 600.0}
    got = await api.client.get(POLICY, headers=t.headers("viewer"))
    assert got.json()["rules"] == r.json()["rules"]
    events = await audit_events(api, t, "telemetry_settings", t.id)
    assert [e["action"] for e in events] == ["create", "update", "update"]
    assert events[-1]["changes"]["rules"] == {
        "before": {"speed_limit_mps": 25, "offline_after_s": 1800},
        "after": {"offline_after_s": 1800, "idle_min_s": 600},
    }


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"rules": {"min_stop_s": 10}}, "min_stop_s"),  # a trip would end at every light
        ({"rules": {"harsh_brake_mps2": 2}}, "harsh_brake_mps2"),  # braking is negative
        ({"rules": {"offline_after_s": "soon"}}, "offline_after_s"),
        ({"rules": {"max_plausible_speed_mps": 200}}, "max_plausible_speed_mps"),  # not a fleet's
        ({}, None),
    ],
)
async def test_bad_thresholds_are_a_422_and_change_nothing(
    api: Api, body: dict[str, object], field: str | None
) -> None:
    t = await _own_tenant(api)
    before = (await api.client.get(POLICY, headers=t.headers())).json()
    r = await api.client.patch(POLICY, json=body, headers=t.headers())
    assert r.status_code == 422, r.text
    if field is not None:
        assert field in r.text
    assert (await api.client.get(POLICY, headers=t.headers())).json() == before
