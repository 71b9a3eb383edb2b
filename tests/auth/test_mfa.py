"""TOTP two-factor authentication: enrolment, login with codes, replay, recovery codes, the
per-role policy and the admin reset."""

from __future__ import annotations

import asyncio

from tests.auth.helpers import (
    bearer,
    claims_of,
    enrol_totp,
    login,
    login_ok,
    me,
    refresh,
    totp_code,
    wrong_totp_code,
)
from tests.kit.app import Api
from tests.kit.problems import assert_problem, assert_unauthorized

SETUP = "/api/v1/auth/mfa/setup"
VERIFY = "/api/v1/auth/mfa/verify"
VEHICLES = "/api/v1/vehicles"


async def test_enrolment_then_login_needs_a_fresh_code(api: Api) -> None:
    t = await api.tenant(roles=["viewer"], login=False)
    email = t.users["viewer"].email
    token = (await login_ok(api, email))["access_token"]

    r = await api.client.post(SETUP, headers=bearer(token))
    assert r.status_code == 200, r.text
    secret = r.json()["secret"]
    uri = r.json()["otpauth_uri"]
    assert uri.startswith("otpauth://totp/")
    assert f"secret={secret}" in uri
    assert "issuer=CTAFleet" in uri
    # Not on until a code proves the authenticator has the secret.
    assert (await me(api, token)).json()["totp_enabled"] is False
    await login_ok(api, email)

    bad = await api.client.post(
        VERIFY, headers=bearer(token), json={"code": wrong_totp_code(api, secret)}
    )
    assert_problem(bad, 422, "invalid-code")
    enrolment_code = totp_code(api, secret)
    r = await api.client.post(VERIFY, headers=bearer(token), json={"code": enrolment_code})
    assert r.status_code == 200, r.text
    codes = r.json()["recovery_codes"]
    assert len(codes) == 10
    assert len(set(codes)) == 10
    # Sessions opened before enrolment (without a second factor) are over.
    assert_unauthorized(await me(api, token))

    missing = await login(api, email)
    assert assert_problem(missing, 401, "mfa-code-required")["mfa_required"] is True
    # The code that confirmed enrolment is spent.
    assert_problem(await login(api, email, totp_code=enrolment_code), 401, "invalid-credentials")
    wrong = await login(api, email, totp_code=wrong_totp_code(api, secret))
    assert_problem(wrong, 401, "invalid-credentials")

    api.clock.advance(30)
    code = totp_code(api, secret)
    pair = await login_ok(api, email, totp_code=code)
    assert pair["mfa_enrolment_required"] is False
    assert (await me(api, pair["access_token"])).json()["totp_enabled"] is True
    # The same code, replayed within its validity window.
    api.clock.advance(10)
    assert_problem(await login(api, email, totp_code=code), 401, "invalid-credentials")
    # A wrong password fails before the code is looked at, and does not spend it.
    api.clock.advance(30)
    fresh = totp_code(api, secret)
    assert_problem(await login(api, email, "Wrong-Password-123", fresh), 401, "invalid-credentials")
    pair = await login_ok(api, email, totp_code=fresh)

    again = await api.client.post(SETUP, headers=bearer(pair["access_token"]))
    assert_problem(again, 409, "mfa-already-enabled")


async def test_codes_are_accepted_one_step_either_side_and_no_further(api: Api) -> None:
    t = await api.tenant(roles=["viewer"], login=False)
    email = t.users["viewer"].email
    secret, _ = await enrol_totp(api, (await login_ok(api, email))["access_token"])
    api.clock.advance(90)  # well clear of the step spent on enrolment

    for offset in (-2, 2):
        code = totp_code(api, secret, offset)
        assert_problem(await login(api, email, totp_code=code), 401, "invalid-credentials")
    # A device clock one step ahead is tolerated...
    await login_ok(api, email, totp_code=totp_code(api, secret, 1))
    # ...and from then on a code of an earlier step is refused, although inside the window.
    for offset in (0, -1):
        code = totp_code(api, secret, offset)
        assert_problem(await login(api, email, totp_code=code), 401, "invalid-credentials")
    api.clock.advance(60)
    await login_ok(api, email, totp_code=totp_code(api, secret))


async def test_recovery_codes_work_once_each(api: Api) -> None:
    t = await api.tenant(roles=["viewer"], login=False)
    email = t.users["viewer"].email
    secret, codes = await enrol_totp(api, (await login_ok(api, email))["access_token"])

    await login_ok(api, email, totp_code=codes[0])
    assert_problem(await login(api, email, totp_code=codes[0]), 401, "invalid-credentials")
    # Typed by hand: case and the dash do not matter.
    await login_ok(api, email, totp_code=codes[1].upper().replace("-", ""))
    assert_problem(await login(api, email, totp_code=codes[1]), 401, "invalid-credentials")
    assert_problem(
        await login(api, email, totp_code="0123abcd-0123abcd"), 401, "invalid-credentials"
    )
    # The authenticator still works alongside.
    await login_ok(api, email, totp_code=totp_code(api, secret))


async def test_one_code_racing_on_two_logins_lets_exactly_one_in(api: Api) -> None:
    t = await api.tenant(roles=["viewer"], login=False)
    email = t.users["viewer"].email
    secret, _ = await enrol_totp(api, (await login_ok(api, email))["access_token"])
    code = totp_code(api, secret)

    results = await asyncio.gather(*(login(api, email, totp_code=code) for _ in range(3)))

    assert sorted(r.status_code for r in results) == [200, 401, 401], [r.text for r in results]


async def test_role_policy_forces_enrolment_and_reset_turns_it_off(api: Api) -> None:
    t = await api.tenant(roles=["admin", "dispatcher"], login=False)
    admin = bearer((await login_ok(api, t.users["admin"].email))["access_token"])
    dispatcher = t.users["dispatcher"]
    earlier = await login_ok(api, dispatcher.email)  # a session from before the policy

    r = await api.client.patch(
        "/api/v1/tenant", headers=admin, json={"mfa_required_roles": ["dispatcher"]}
    )
    assert r.status_code == 200, r.text
    assert r.json()["mfa_required_roles"] == ["dispatcher"]

    # An earlier session falls under the policy at its next refresh.
    rotated = (await refresh(api, earlier["refresh_token"])).json()
    assert rotated["mfa_enrolment_required"] is True
    for token in (rotated["access_token"], earlier["access_token"]):
        assert_problem(
            await api.client.get(VEHICLES, headers=bearer(token)), 403, "mfa-enrolment-required"
        )

    pending = await login_ok(api, dispatcher.email)
    assert pending["mfa_enrolment_required"] is True
    assert claims_of(pending["access_token"])["mfa_pending"] is True
    pending_headers = bearer(pending["access_token"])
    refused = await api.client.get(VEHICLES, headers=pending_headers)
    assert_problem(refused, 403, "mfa-enrolment-required")
    assert "/api/v1/auth/mfa/setup" in refused.json()["detail"]
    assert (await api.client.get(VEHICLES, headers=admin)).status_code == 200
    assert (await me(api, pending["access_token"])).status_code == 200

    secret, _ = await enrol_totp(api, pending["access_token"])
    # Enrolment ended the pending sessions: their tokens are now simply invalid.
    assert_unauthorized(await api.client.get(VEHICLES, headers=pending_headers))
    assert_problem(await login(api, dispatcher.email), 401, "mfa-code-required")
    enrolled = await login_ok(api, dispatcher.email, totp_code=totp_code(api, secret))
    assert enrolled["mfa_enrolment_required"] is False
    assert (
        await api.client.get(VEHICLES, headers=bearer(enrolled["access_token"]))
    ).status_code == 200

    r = await api.client.post(f"/api/v1/users/{dispatcher.id}/mfa/reset", headers=admin)

    assert r.status_code == 200, r.text
    assert r.json()["totp_enabled"] is False
    assert_unauthorized(await me(api, enrolled["access_token"]))
    # No code needed any more, but the role still requires enrolment.
    after_reset = await login_ok(api, dispatcher.email)
    assert after_reset["mfa_enrolment_required"] is True
    r = await api.client.patch("/api/v1/tenant", headers=admin, json={"mfa_required_roles": []})
    assert r.status_code == 200, r.text
    free = await login_ok(api, dispatcher.email)
    assert free["mfa_enrolment_required"] is False
    assert (await api.client.get(VEHICLES, headers=bearer(free["access_token"]))).status_code == 200


async def test_reset_invalidates_old_recovery_codes_and_is_admin_only(api: Api) -> None:
    # Other roles without users:manage are covered by the permission matrix test.
    t = await api.tenant(roles=["admin", "viewer"], login=False)
    viewer = t.users["viewer"]
    admin = bearer((await login_ok(api, t.users["admin"].email))["access_token"])
    _, old_codes = await enrol_totp(api, (await login_ok(api, viewer.email))["access_token"])
    own = bearer((await login_ok(api, viewer.email, totp_code=old_codes[0]))["access_token"])
    reset = f"/api/v1/users/{viewer.id}/mfa/reset"

    # Turning off one's own second factor would defeat it.
    assert_problem(await api.client.post(reset, headers=own), 403, "forbidden")
    assert (await api.client.post(reset, headers=admin)).status_code == 200

    pair = await login_ok(api, viewer.email)  # no code needed now
    assert pair["mfa_enrolment_required"] is False
    _, new_codes = await enrol_totp(api, pair["access_token"])
    assert_problem(
        await login(api, viewer.email, totp_code=old_codes[1]), 401, "invalid-credentials"
    )
    await login_ok(api, viewer.email, totp_code=new_codes[0])


async def test_reset_of_another_tenants_user_is_not_found(api: Api) -> None:
    mine = await api.tenant(roles=["admin"])
    theirs = await api.tenant(roles=["viewer"], login=False)

    r = await api.client.post(
        f"/api/v1/users/{theirs.users['viewer'].id}/mfa/reset", headers=mine.headers("admin")
    )

    assert_problem(r, 404, "not-found")


async def test_an_admin_cannot_reset_their_own_mfa_through_the_admin_route(api: Api) -> None:
    """It would turn off their own second factor and end the session making the request; the
    self-service enrolment routes exist for their own device."""
    t = await api.tenant(roles=["admin"], login=False)
    admin = t.users["admin"]
    secret, _codes = await enrol_totp(api, (await login_ok(api, admin.email))["access_token"])
    token = (await login_ok(api, admin.email, totp_code=totp_code(api, secret)))["access_token"]
    r = await api.client.post(f"/api/v1/users/{admin.id}/mfa/reset", headers=bearer(token))
    assert_problem(r, 409, "cannot-reset-own-mfa")
    # Nothing changed: the session lives, TOTP is still on.
    r = await me(api, token)
    assert r.status_code == 200
    assert r.json()["totp_enabled"] is True
