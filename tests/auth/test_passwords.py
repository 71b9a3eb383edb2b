"""The password policy, Argon2id storage, and changing one's password."""

from __future__ import annotations

import uuid

from sqlalchemy import select

from ctafleet.auth.models import User
from ctafleet.kernel.context import Actor
from tests.auth.helpers import audit_events, bearer, login, login_ok, me, refresh, unique_email
from tests.kit.app import PASSWORD, Api
from tests.kit.problems import assert_problem, assert_unauthorized

USERS = "/api/v1/users"
CHANGE = "/api/v1/auth/password"
GOOD_PASSWORD = "Velvet-Orbit-Lantern-93"


async def _stored_hash(api: Api, tenant_id: uuid.UUID, email: str) -> str:
    async with api.db.session(Actor.system(tenant_id)) as session:
        value = await session.scalar(select(User.password_hash).where(User.email == email))
    assert value is not None
    return value


async def test_weak_passwords_are_refused_when_creating_a_user(api: Api) -> None:
    t = await api.tenant(roles=["admin"])
    headers = bearer(t.tokens["admin"])
    domain = f"{t.slug}.example.org"
    email = f"zorblaxquint@{domain}"
    weak = {
        "eleven chars": "Tr0ub4dor&3",
        "common": "password1234",
        "common keyboard walk": "qwertyuiop123",
        "repeated": "aaaaaaaaaaaa",
        "sequence": "123456789012",
        "built from the e-mail": "zorblaxquint7",
    }

    for name, password in weak.items():
        r = await api.client.post(
            USERS, headers=headers, json={"email": email, "role": "viewer", "password": password}
        )
        body = assert_problem(r, 422, "weak-password")
        assert body["detail"], name
        assert password not in r.text, name

    # Nothing was created by the refusals; the e-mail-derived one is fine for someone else.
    other = await api.client.post(
        USERS,
        headers=headers,
        json={"email": f"vexmorti@{domain}", "role": "viewer", "password": "zorblaxquint7"},
    )
    assert other.status_code == 201, other.text
    created = await api.client.post(
        USERS, headers=headers, json={"email": email, "role": "viewer", "password": GOOD_PASSWORD}
    )
    assert created.status_code == 201, created.text
    creations = await audit_events(api, t.tokens["admin"], entity_type="user", action="create")
    assert len(creations) == 3  # the admin from the fixture and the two above


async def test_stored_hash_is_argon2id_and_not_the_password(api: Api) -> None:
    t = await api.tenant(roles=["admin"])
    email = unique_email("hashed")
    r = await api.client.post(
        USERS,
        headers=bearer(t.tokens["admin"]),
        json={"email": email, "role": "viewer", "password": GOOD_PASSWORD},
    )
    assert r.status_code == 201, r.text

    stored = await _stored_hash(api, t.id, email)

    assert stored.startswith("$argon2id$")
    assert GOOD_PASSWORD not in stored
    assert "password" not in r.json()
    assert "password_hash" not in r.json()


async def test_password_change_keeps_this_session_and_ends_the_others(api: Api) -> None:
    t = await api.tenant(roles=["viewer"], login=False)
    email = t.users["viewer"].email
    current = await login_ok(api, email)
    other = await login_ok(api, email)
    old_hash = await _stored_hash(api, t.id, email)
    headers = bearer(current["access_token"])

    wrong = await api.client.post(
        CHANGE,
        headers=headers,
        json={"current_password": "Not-The-Password-42", "new_password": GOOD_PASSWORD},
    )
    assert_problem(wrong, 403, "invalid-credentials")
    weak = await api.client.post(
        CHANGE, headers=headers, json={"current_password": PASSWORD, "new_password": "password1234"}
    )
    assert_problem(weak, 422, "weak-password")
    # Neither refusal touched anything.
    assert (await me(api, other["access_token"])).status_code == 200
    assert await _stored_hash(api, t.id, email) == old_hash

    r = await api.client.post(
        CHANGE, headers=headers, json={"current_password": PASSWORD, "new_password": GOOD_PASSWORD}
    )

    assert r.status_code == 204, r.text
    assert (await me(api, current["access_token"])).status_code == 200
    assert (await refresh(api, current["refresh_token"])).status_code == 200
    assert_unauthorized(await me(api, other["access_token"]))
    assert_problem(await refresh(api, other["refresh_token"]), 401, "invalid-refresh-token")
    assert_problem(await login(api, email, PASSWORD), 401, "invalid-credentials")
    await login_ok(api, email, GOOD_PASSWORD)
    new_hash = await _stored_hash(api, t.id, email)
    assert new_hash.startswith("$argon2id$")
    assert new_hash != old_hash


async def test_long_passphrases_are_accepted_up_to_256_characters(api: Api) -> None:
    """zxcvbn refuses more than 72 characters; a password manager's passphrase must not 500."""
    t = await api.tenant(roles=["admin"])
    headers = bearer(t.tokens["admin"])
    long_pass = "correct horse battery staple, " * 8 + "Zq7!"  # 244 characters
    email = unique_email("long")
    r = await api.client.post(
        USERS, headers=headers, json={"email": email, "role": "viewer", "password": long_pass}
    )
    assert r.status_code == 201, r.text
    pair = await login_ok(api, email, long_pass)
    longest = "Quasar-Lantern-" * 17 + "x"  # 256 characters
    r = await api.client.post(
        CHANGE,
        headers=bearer(pair["access_token"]),
        json={"current_password": long_pass, "new_password": longest},
    )
    assert r.status_code == 204, r.text
    await login_ok(api, email, longest)
    r = await api.client.post(
        USERS,
        headers=headers,
        json={"email": unique_email("toolong"), "role": "viewer", "password": longest + "y"},
    )
    assert_problem(r, 422, "validation-error")
