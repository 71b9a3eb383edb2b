"""POST /api/v1/auth/login: the token pair, and the refusals that must all look alike."""

from __future__ import annotations

import asyncio

from tests.auth.helpers import (
    LOGIN,
    audit_events,
    bearer,
    claims_of,
    login,
    login_ok,
    me,
    unique_email,
)
from tests.kit.app import PASSWORD, Api
from tests.kit.problems import assert_problem


async def test_login_returns_a_working_token_pair(api: Api) -> None:
    t = await api.tenant(roles=["viewer"], login=False)
    user = t.users["viewer"]

    r = await login(api, user.email)

    assert r.status_code == 200, r.text
    pair = r.json()
    assert {"access_token", "refresh_token", "token_type", "expires_in"} <= set(pair)
    assert pair["token_type"] == "bearer"
    assert pair["expires_in"] == api.settings.auth.access_token_ttl_s
    assert pair["mfa_enrolment_required"] is False
    assert pair["refresh_token"] != pair["access_token"]
    claims = claims_of(pair["access_token"])
    assert claims["sub"] == str(user.id)
    assert claims["tid"] == str(t.id)
    assert claims["iss"] == api.settings.auth.issuer
    assert claims["aud"] == api.settings.auth.audience
    assert claims["exp"] - claims["iat"] == api.settings.auth.access_token_ttl_s
    assert claims["iat"] == int(api.clock.now().timestamp())
    profile = await me(api, pair["access_token"])
    assert profile.status_code == 200, profile.text
    assert profile.json()["id"] == str(user.id)
    assert profile.json()["last_login_at"] is not None
    assert "password_hash" not in profile.json()


async def test_email_is_case_insensitive(api: Api) -> None:
    t = await api.tenant(roles=["viewer"], login=False)
    email = t.users["viewer"].email

    pair = await login_ok(api, email.upper())

    assert claims_of(pair["access_token"])["sub"] == str(t.users["viewer"].id)


async def test_refusals_are_indistinguishable_and_audited(api: Api) -> None:
    t = await api.tenant(roles=["admin", "viewer"])
    admin_token = t.tokens["admin"]
    viewer = t.users["viewer"]
    r = await api.client.patch(
        f"/api/v1/users/{viewer.id}", headers=bearer(admin_token), json={"is_active": False}
    )
    assert r.status_code == 200, r.text
    admin = t.users["admin"]
    profile_before = (await me(api, admin_token)).json()

    wrong_password = await login(api, admin.email, "Not-The-Password-42")
    unknown_email = await login(api, unique_email("nobody"), PASSWORD)
    deactivated = await login(api, viewer.email, PASSWORD)

    bodies = []
    for r in (wrong_password, unknown_email, deactivated):
        body = assert_problem(r, 401, "invalid-credentials")
        assert "access_token" not in body
        bodies.append({k: v for k, v in body.items() if k != "request_id"})
    # Same answer whichever part was wrong: no account enumeration.
    assert bodies[0] == bodies[1] == bodies[2]

    failed = await audit_events(api, admin_token, action="login_failed")
    assert {e["entity_id"] for e in failed} == {str(admin.id), str(viewer.id)}
    for event in failed:
        assert event["entity_type"] == "user"
        assert event["client_ip"]
        assert event["request_id"]
    assert wrong_password.headers["x-request-id"] in {e["request_id"] for e in failed}
    # A refusal changes nothing on the account and opens no session.
    profile_after = (await me(api, admin_token)).json()
    assert profile_after["last_login_at"] == profile_before["last_login_at"]
    assert profile_after["version"] == profile_before["version"]
    successes = await audit_events(api, admin_token, action="login")
    assert {e["entity_id"] for e in successes} == {str(admin.id), str(viewer.id)}
    assert len(successes) == 2


async def test_malformed_login_is_a_validation_problem(api: Api) -> None:
    r = await api.client.post(LOGIN, json={"email": "not-an-email", "password": "x"})
    assert_problem(r, 422, "validation-error")
    r = await api.client.post(LOGIN, json={"email": unique_email(), "password": ""})
    assert_problem(r, 422, "validation-error")
    r = await api.client.post(
        LOGIN, json={"email": unique_email(), "password": "x", "role": "admin"}
    )
    assert_problem(r, 422, "validation-error")


async def test_concurrent_logins_of_one_user_all_succeed(api: Api) -> None:
    t = await api.tenant(roles=["viewer"], login=False)
    email = t.users["viewer"].email

    results = await asyncio.gather(*(login(api, email) for _ in range(4)))

    assert [r.status_code for r in results] == [200] * 4, [r.text for r in results]
    sessions = {claims_of(r.json()["access_token"])["sid"] for r in results}
    assert len(sessions) == 4
