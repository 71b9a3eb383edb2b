"""The audit trail of user and organisation changes: who may read it, what it records, and that
no secret ever reaches it."""

from __future__ import annotations

import json

from ctafleet.db.audit import REDACTED, diff, is_secret_field
from tests.auth.helpers import audit_events, bearer, enrol_totp, login_ok, unique_email
from tests.kit.app import PASSWORD, Api
from tests.kit.factories import vehicle_body
from tests.kit.problems import assert_problem

AUDIT = "/api/v1/audit-events"
NEW_PASSWORD = "Velvet-Orbit-Lantern-93"


async def test_user_and_tenant_changes_are_recorded_with_secrets_redacted(api: Api) -> None:
    t = await api.tenant(roles=["admin", "auditor", "viewer"])
    admin_id = str(t.users["admin"].id)
    headers = t.headers("admin")
    email = unique_email("audited")

    created = await api.client.post(
        "/api/v1/users",
        headers=headers,
        json={"email": email, "full_name": "Audrey Ted", "role": "viewer", "password": PASSWORD},
    )
    assert created.status_code == 201, created.text
    user_id = created.json()["id"]
    updated = await api.client.patch(
        f"/api/v1/users/{user_id}",
        headers=headers,
        json={"role": "mechanic", "full_name": "Audrey"},
    )
    assert updated.status_code == 200, updated.text
    tenant = await api.client.patch(
        "/api/v1/tenant",
        headers=headers,
        json={"timezone": "Europe/Berlin", "mfa_required_roles": ["dispatcher", "admin"]},
    )
    assert tenant.status_code == 200, tenant.text

    # The auditor reads what the admin did.
    reader = t.tokens["auditor"]
    [create] = await audit_events(
        api, reader, entity_type="user", entity_id=user_id, action="create"
    )
    assert create["actor_user_id"] == admin_id
    assert create["actor_role"] == "admin"
    assert create["request_id"] == created.headers["x-request-id"]
    changes = create["changes"]
    assert changes["email"] == {"before": None, "after": email.lower()}
    assert changes["role"] == {"before": None, "after": "viewer"}
    assert changes["password_hash"] == {"before": None, "after": REDACTED}
    assert "totp_secret" not in changes  # unset on both sides: no change to record

    [update] = await audit_events(
        api, reader, entity_type="user", entity_id=user_id, action="update"
    )
    assert update["changes"] == {
        "role": {"before": "viewer", "after": "mechanic"},
        "full_name": {"before": "Audrey Ted", "after": "Audrey"},
    }
    assert update["request_id"] == updated.headers["x-request-id"]

    [change] = await audit_events(api, reader, entity_type="tenant", action="update")
    assert change["entity_id"] == str(t.id)
    assert change["actor_user_id"] == admin_id
    assert change["changes"] == {
        "timezone": {"before": "UTC", "after": "Europe/Berlin"},
        "mfa_required_roles": {"before": [], "after": ["admin", "dispatcher"]},
    }

    # Filters narrow; the newest event comes first.
    by_admin = await audit_events(api, reader, actor_user_id=admin_id)
    assert [e["action"] for e in by_admin[:3]] == ["update", "update", "create"]
    assert all(e["actor_user_id"] == admin_id for e in by_admin)


async def test_secrets_never_reach_the_audit_log(api: Api) -> None:
    t = await api.tenant(roles=["admin", "viewer"], login=False)
    admin = (await login_ok(api, t.users["admin"].email))["access_token"]
    viewer = t.users["viewer"]
    token = (await login_ok(api, viewer.email))["access_token"]
    secret, codes = await enrol_totp(api, token)
    own = (await login_ok(api, viewer.email, totp_code=codes[0]))["access_token"]
    r = await api.client.post(
        "/api/v1/auth/password",
        headers=bearer(own),
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
    )
    assert r.status_code == 204, r.text
    reset = await api.client.post(f"/api/v1/users/{viewer.id}/mfa/reset", headers=bearer(admin))
    assert reset.status_code == 200, reset.text

    events = await audit_events(api, admin, entity_id=viewer.id)

    actions = [e["action"] for e in reversed(events)]
    for expected in (
        "create",
        "login",
        "mfa_setup_started",
        "mfa_enabled",
        "recovery_code_used",
        "password_changed",
        "mfa_reset",
    ):
        assert expected in actions, actions
    [changed] = [e for e in events if e["action"] == "password_changed"]
    assert changed["changes"] == {"password_hash": {"before": REDACTED, "after": REDACTED}}
    everything = json.dumps(await audit_events(api, admin))
    for leaked in (PASSWORD, NEW_PASSWORD, secret, *codes, "$argon2", "ctr_", token, own):
        assert leaked not in everything


async def test_only_admins_and_auditors_read_the_log(api: Api) -> None:
    # Every other role is covered by the permission matrix test.
    t = await api.tenant(roles=["admin", "auditor", "viewer"])
    other = await api.tenant(roles=["admin"], login=False)

    for role in ("admin", "auditor"):
        r = await api.client.get(AUDIT, headers=t.headers(role))
        assert r.status_code == 200, r.text
        # Only this organisation's events.
        assert str(other.id) not in r.text
        assert str(other.users["admin"].id) not in r.text
        assert r.json()["data"]
    assert_problem(await api.client.get(AUDIT, headers=t.headers("viewer")), 403, "forbidden")
    # The log is read-only through the API.
    for method in ("POST", "PATCH", "DELETE"):
        r = await api.client.request(method, AUDIT, headers=t.headers("admin"), json={})
        assert r.status_code == 405, r.text


def test_diff_redacts_every_secret_looking_field() -> None:
    before = {"password_hash": "h1", "totp_secret": None, "api_token": "a", "name": "x"}
    after = {"password_hash": "h2", "totp_secret": "S3CR3T", "api_token": "b", "name": "y"}

    changes = diff(before, after)

    assert changes == {
        "api_token": {"before": REDACTED, "after": REDACTED},
        "name": {"before": "x", "after": "y"},
        "password_hash": {"before": REDACTED, "after": REDACTED},
        "totp_secret": {"before": None, "after": REDACTED},
    }
    assert diff({"password_hash": "same"}, {"password_hash": "same"}) == {}
    for name in ("password_hash", "totp_secret", "credential_hash", "refresh_token"):
        assert is_secret_field(name), name
    assert not is_secret_field("email")


async def test_events_name_their_actor(api: Api) -> None:
    t = await api.tenant(roles=["admin", "auditor"])
    admin = t.users["admin"]
    r = await api.client.patch("/api/v1/tenant", json={"name": "Renamed"}, headers=t.headers())
    assert r.status_code == 200, r.text
    r = await api.client.get(
        AUDIT, params={"entity_type": "tenant", "action": "update"}, headers=t.headers("auditor")
    )
    (event,) = r.json()["data"]
    assert event["actor_user_id"] == str(admin.id)
    assert event["actor_email"] == admin.email
    assert event["actor_name"] == admin.full_name
    r = await api.client.get(
        AUDIT,
        params={"entity_type": "tenant", "format": "csv"},
        headers=t.headers("auditor"),
    )
    assert admin.email in r.text
    # The platform's own events (tenant creation) have no user to name.
    r = await api.client.get(
        AUDIT, params={"entity_type": "tenant", "action": "create"}, headers=t.headers("auditor")
    )
    (created,) = r.json()["data"]
    assert created["actor_email"] is None


async def test_fleet_managers_read_the_fleets_audit_only(api: Api) -> None:
    t = await api.tenant(roles=["admin", "fleet_manager"])
    r = await api.client.post(
        "/api/v1/vehicles", json=vehicle_body(), headers=t.headers("fleet_manager")
    )
    vehicle = r.json()
    await api.client.patch("/api/v1/tenant", json={"name": "Renamed"}, headers=t.headers())
    r = await api.client.get(AUDIT, params={"limit": 500}, headers=t.headers("fleet_manager"))
    assert r.status_code == 200, r.text
    kinds = {e["entity_type"] for e in r.json()["data"]}
    assert "vehicle" in kinds
    assert not kinds & {"user", "session", "tenant"}, kinds
    r = await api.client.get(
        AUDIT, params={"entity_type": "user"}, headers=t.headers("fleet_manager")
    )
    assert r.json()["data"] == []
    r = await api.client.get(
        AUDIT,
        params={"entity_type": "vehicle", "entity_id": vehicle["id"]},
        headers=t.headers("fleet_manager"),
    )
    assert [e["action"] for e in r.json()["data"]] == ["create"]
    # The admin still sees everything.
    r = await api.client.get(AUDIT, params={"limit": 500}, headers=t.headers())
    assert {"user", "tenant", "vehicle"} <= {e["entity_type"] for e in r.json()["data"]}
