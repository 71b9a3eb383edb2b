"""The users API: who may manage users, e-mail uniqueness, self-protection, session ends on
deactivation and role change, ETag / If-Match, tenant isolation."""

from __future__ import annotations

import asyncio
import uuid

from tests.auth.helpers import audit_events, bearer, login, login_ok, me, refresh, unique_email
from tests.kit.app import Api
from tests.kit.problems import assert_problem, assert_unauthorized

USERS = "/api/v1/users"
GOOD_PASSWORD = "Velvet-Orbit-Lantern-93"


async def test_admin_creates_lists_reads_and_patches_users(api: Api) -> None:
    t = await api.tenant(roles=["admin"])
    admin = t.headers("admin")
    email = unique_email("New.Person")

    r = await api.client.post(
        USERS,
        headers=admin,
        json={
            "email": email,
            "full_name": "New Person",
            "role": "mechanic",
            "password": GOOD_PASSWORD,
        },
    )

    assert r.status_code == 201, r.text
    created = r.json()
    assert created["email"] == email.lower()
    assert created["role"] == "mechanic"
    assert created["is_active"] is True
    assert created["totp_enabled"] is False
    assert created["version"] == 1
    assert r.headers["etag"] == '"v1"'
    assert r.headers["location"] == f"{USERS}/{created['id']}"
    assert not {"password", "password_hash", "totp_secret"} & set(created)
    pair = await login_ok(api, email, GOOD_PASSWORD)
    assert (await me(api, pair["access_token"])).json()["role"] == "mechanic"

    listed = await api.client.get(USERS, headers=admin)
    assert listed.status_code == 200, listed.text
    assert {u["email"] for u in listed.json()["data"]} == {email.lower(), t.users["admin"].email}
    only = await api.client.get(USERS, headers=admin, params={"role": "mechanic"})
    assert [u["id"] for u in only.json()["data"]] == [created["id"]]
    exported = await api.client.get(USERS, headers=admin, params={"format": "csv"})
    assert exported.status_code == 200, exported.text
    header = exported.text.splitlines()[0].split(",")
    assert "email" in header
    assert not {"password", "password_hash", "totp_secret"} & set(header)
    assert email.lower() in exported.text
    got = await api.client.get(f"{USERS}/{created['id']}", headers=admin)
    assert got.status_code == 200
    assert got.json()["email"] == email.lower()

    r = await api.client.patch(
        f"{USERS}/{created['id']}",
        headers={**admin, "If-Match": got.headers["etag"]},
        json={"full_name": "Renamed Person", "role": "driver"},
    )

    assert r.status_code == 200, r.text
    assert r.json()["full_name"] == "Renamed Person"
    assert r.json()["role"] == "driver"
    assert r.headers["etag"] == f'"v{r.json()["version"]}"'
    assert r.json()["version"] > got.json()["version"]


async def test_only_user_managers_create_users(api: Api) -> None:
    t = await api.tenant(roles=["fleet_manager", "viewer"])
    body = {"email": unique_email(), "role": "admin", "password": GOOD_PASSWORD}

    for role in ("fleet_manager", "viewer"):
        r = await api.client.post(USERS, headers=t.headers(role), json=body)
        assert_problem(r, 403, "forbidden")
    target = t.users["viewer"].id
    r = await api.client.patch(
        f"{USERS}/{target}", headers=t.headers("fleet_manager"), json={"role": "admin"}
    )
    assert_problem(r, 403, "forbidden")
    # users:read without users:manage lists but does not change.
    assert (await api.client.get(USERS, headers=t.headers("fleet_manager"))).status_code == 200
    assert_problem(await api.client.get(USERS, headers=t.headers("viewer")), 403, "forbidden")
    assert (await me(api, t.tokens["viewer"])).json()["role"] == "viewer"


async def test_duplicate_email_is_a_conflict_in_any_case_and_any_tenant(api: Api) -> None:
    t = await api.tenant(roles=["admin"])
    other = await api.tenant(roles=["viewer"], login=False)
    existing = t.users["admin"].email

    for email in (existing, existing.upper(), other.users["viewer"].email):
        r = await api.client.post(
            USERS,
            headers=t.headers("admin"),
            json={"email": email, "role": "viewer", "password": GOOD_PASSWORD},
        )
        assert_problem(r, 409, "email-taken")


async def test_admin_cannot_demote_or_deactivate_self(api: Api) -> None:
    t = await api.tenant(roles=["admin"])
    me_url = f"{USERS}/{t.users['admin'].id}"

    for body in ({"role": "viewer"}, {"is_active": False}, {"role": "auditor", "is_active": True}):
        r = await api.client.patch(me_url, headers=t.headers("admin"), json=body)
        assert_problem(r, 409, "cannot-demote-self")
    # Sending one's own unchanged role back is not a demotion, and does not log one out.
    version = (await me(api, t.tokens["admin"])).json()["version"]
    same = await api.client.patch(
        me_url, headers=t.headers("admin"), json={"role": "admin", "is_active": True}
    )
    assert same.status_code == 200, same.text
    assert same.json()["version"] == version  # nothing changed, nothing written
    r = await api.client.patch(
        me_url,
        headers=t.headers("admin"),
        json={"role": "admin", "is_active": True, "full_name": "Still Admin"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["role"] == "admin"
    assert (await me(api, t.tokens["admin"])).json()["full_name"] == "Still Admin"
    [update] = await audit_events(api, t.tokens["admin"], action="update", entity_type="user")
    assert update["changes"] == {
        "full_name": {"before": "admin of " + t.slug, "after": "Still Admin"}
    }


async def test_deactivation_ends_the_users_sessions(api: Api) -> None:
    t = await api.tenant(roles=["admin", "viewer"], login=False)
    admin = bearer((await login_ok(api, t.users["admin"].email))["access_token"])
    viewer = t.users["viewer"]
    pair = await login_ok(api, viewer.email)
    url = f"{USERS}/{viewer.id}"

    r = await api.client.patch(url, headers=admin, json={"is_active": False})

    assert r.status_code == 200, r.text
    assert r.json()["is_active"] is False
    assert_unauthorized(await me(api, pair["access_token"]))
    assert_problem(await refresh(api, pair["refresh_token"]), 401, "invalid-refresh-token")
    assert_problem(await login(api, viewer.email), 401, "invalid-credentials")
    inactive = await api.client.get(USERS, headers=admin, params={"is_active": "false"})
    assert [u["id"] for u in inactive.json()["data"]] == [str(viewer.id)]

    r = await api.client.patch(url, headers=admin, json={"is_active": True})
    assert r.status_code == 200, r.text
    await login_ok(api, viewer.email)
    # Reactivation does not bring the ended session back.
    assert_unauthorized(await me(api, pair["access_token"]))


async def test_role_change_ends_sessions_but_a_rename_does_not(api: Api) -> None:
    t = await api.tenant(roles=["admin", "viewer"], login=False)
    admin = bearer((await login_ok(api, t.users["admin"].email))["access_token"])
    viewer = t.users["viewer"]
    pair = await login_ok(api, viewer.email)
    url = f"{USERS}/{viewer.id}"

    r = await api.client.patch(
        url, headers=admin, json={"full_name": "Vera Viewer", "role": "viewer"}
    )
    assert r.status_code == 200, r.text
    assert (await me(api, pair["access_token"])).status_code == 200

    r = await api.client.patch(url, headers=admin, json={"role": "dispatcher"})
    assert r.status_code == 200, r.text
    assert_unauthorized(await me(api, pair["access_token"]))
    fresh = await login_ok(api, viewer.email)
    assert (await me(api, fresh["access_token"])).json()["role"] == "dispatcher"


async def test_if_match_guards_patch(api: Api) -> None:
    t = await api.tenant(roles=["admin", "viewer"])
    admin = t.headers("admin")
    url = f"{USERS}/{t.users['viewer'].id}"
    got = await api.client.get(url, headers=admin)
    etag = got.headers["etag"]
    assert etag == f'"v{got.json()["version"]}"'

    # The user logging in (later, so last_login_at moves) is not an edit: the ETag stays.
    api.clock.advance(1)
    await login_ok(api, t.users["viewer"].email)
    r = await api.client.patch(url, headers={**admin, "If-Match": etag}, json={"full_name": "A"})
    assert r.status_code == 200, r.text
    assert r.headers["etag"] != etag

    stale = await api.client.patch(
        url, headers={**admin, "If-Match": etag}, json={"full_name": "B"}
    )
    assert_problem(stale, 412, "precondition-failed")
    garbage = await api.client.patch(
        url, headers={**admin, "If-Match": "abc"}, json={"full_name": "B"}
    )
    assert_problem(garbage, 412, "precondition-failed")
    assert (await api.client.get(url, headers=admin)).json()["full_name"] == "A"

    weak = await api.client.patch(
        url, headers={**admin, "If-Match": f"W/{r.headers['etag']}"}, json={"full_name": "C"}
    )
    assert weak.status_code == 200, weak.text
    star = await api.client.patch(url, headers={**admin, "If-Match": "*"}, json={"full_name": "D"})
    assert star.status_code == 200, star.text


async def test_concurrent_patches_with_one_etag_let_exactly_one_through(api: Api) -> None:
    t = await api.tenant(roles=["admin", "viewer"], login=False)
    admin = bearer((await login_ok(api, t.users["admin"].email))["access_token"])
    url = f"{USERS}/{t.users['viewer'].id}"
    etag = (await api.client.get(url, headers=admin)).headers["etag"]

    results = await asyncio.gather(
        *(
            api.client.patch(url, headers={**admin, "If-Match": etag}, json={"full_name": f"N{i}"})
            for i in range(3)
        )
    )

    assert sorted(r.status_code for r in results) == [200, 412, 412], [r.text for r in results]
    winner = next(r for r in results if r.status_code == 200).json()
    assert (await api.client.get(url, headers=admin)).json()["full_name"] == winner["full_name"]

    # Without If-Match a lost race is a conflict to retry, never a server error.
    results = await asyncio.gather(
        *(api.client.patch(url, headers=admin, json={"full_name": f"M{i}"}) for i in range(4))
    )
    statuses = [r.status_code for r in results]
    assert set(statuses) <= {200, 409}, [r.text for r in results]
    assert 200 in statuses
    for r in results:
        if r.status_code == 409:
            assert_problem(r, 409, "concurrent-update")


async def test_other_tenants_users_are_invisible_and_probes_are_audited(api: Api) -> None:
    mine = await api.tenant(roles=["admin"])
    theirs = await api.tenant(roles=["admin"])
    target = theirs.users["admin"].id

    got = await api.client.get(f"{USERS}/{target}", headers=mine.headers("admin"))
    patched = await api.client.patch(
        f"{USERS}/{target}", headers=mine.headers("admin"), json={"full_name": "Pwned"}
    )
    missing = await api.client.get(f"{USERS}/{uuid.uuid4()}", headers=mine.headers("admin"))

    assert_problem(got, 404, "not-found")
    assert_problem(patched, 404, "not-found")
    assert_problem(missing, 404, "not-found")
    listed = await api.client.get(USERS, headers=mine.headers("admin"))
    assert str(target) not in listed.text
    assert (await me(api, theirs.tokens["admin"])).json()["full_name"] != "Pwned"
    probes = await audit_events(api, theirs.tokens["admin"], action="cross_tenant_access_denied")
    assert len(probes) == 2
    assert {e["entity_id"] for e in probes} == {str(target)}
    assert {e["actor_user_id"] for e in probes} == {str(mine.users["admin"].id)}
    assert await audit_events(api, mine.tokens["admin"], action="cross_tenant_access_denied") == []


async def test_invalid_user_bodies_are_validation_problems(api: Api) -> None:
    t = await api.tenant(roles=["admin"])
    admin = t.headers("admin")
    bodies = [
        {"email": unique_email(), "role": "superuser", "password": GOOD_PASSWORD},
        {"email": "nope", "role": "viewer", "password": GOOD_PASSWORD},
        {"email": unique_email(), "role": "viewer", "password": GOOD_PASSWORD, "is_admin": True},
        {"email": unique_email(), "role": "viewer"},
    ]
    for body in bodies:
        assert_problem(
            await api.client.post(USERS, headers=admin, json=body), 422, "validation-error"
        )
    url = f"{USERS}/{t.users['admin'].id}"
    assert_problem(
        await api.client.patch(url, headers=admin, json={"email": "x@example.org"}),
        422,
        "validation-error",
    )
    assert_problem(
        await api.client.patch(url, headers=admin, json={"password_hash": "x"}),
        422,
        "validation-error",
    )
    assert_problem(
        await api.client.get(f"{USERS}/not-a-uuid", headers=admin), 422, "validation-error"
    )
