"""Sessions: refresh-token rotation, reuse detection (the whole family ends), expiry, logout."""

from __future__ import annotations

import asyncio

from tests.auth.helpers import LOGOUT, audit_events, bearer, claims_of, login_ok, me, refresh
from tests.kit.app import Api
from tests.kit.problems import assert_problem, assert_unauthorized


async def test_refresh_rotates_the_pair_within_the_session(api: Api) -> None:
    t = await api.tenant(roles=["viewer"], login=False)
    first = await login_ok(api, t.users["viewer"].email)
    api.clock.advance(5)  # a new iat, so the new access token differs for certain

    r = await refresh(api, first["refresh_token"])

    assert r.status_code == 200, r.text
    second = r.json()
    assert second["token_type"] == "bearer"
    assert second["expires_in"] == api.settings.auth.access_token_ttl_s
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    assert claims_of(second["access_token"])["sid"] == claims_of(first["access_token"])["sid"]
    assert (await me(api, second["access_token"])).status_code == 200
    # The newest refresh token rotates again.
    third = await refresh(api, second["refresh_token"])
    assert third.status_code == 200, third.text


async def test_reused_refresh_token_revokes_the_whole_family(api: Api) -> None:
    t = await api.tenant(roles=["admin"], login=False)
    email = t.users["admin"].email
    observer = await login_ok(api, email)  # a second, unrelated session of the same user
    first = await login_ok(api, email)
    second = (await refresh(api, first["refresh_token"])).json()
    third = (await refresh(api, second["refresh_token"])).json()

    # The first refresh token comes back: someone kept a copy.
    r = await refresh(api, first["refresh_token"])

    assert_problem(r, 401, "invalid-refresh-token")
    for pair in (first, second, third):
        assert_unauthorized(await me(api, pair["access_token"]))
    assert_problem(await refresh(api, third["refresh_token"]), 401, "invalid-refresh-token")
    # Only that family ended: the user's other session goes on.
    assert (await me(api, observer["access_token"])).status_code == 200
    reuse = await audit_events(api, observer["access_token"], action="refresh_token_reuse")
    assert [e["entity_id"] for e in reuse] == [claims_of(first["access_token"])["sid"]]


async def test_concurrent_refreshes_with_one_token_let_exactly_one_win(api: Api) -> None:
    t = await api.tenant(roles=["viewer"], login=False)
    pair = await login_ok(api, t.users["viewer"].email)

    results = await asyncio.gather(*(refresh(api, pair["refresh_token"]) for _ in range(3)))

    statuses = sorted(r.status_code for r in results)
    assert statuses == [200, 401, 401], [r.text for r in results]


async def test_unknown_refresh_token_is_refused(api: Api) -> None:
    r = await refresh(api, "ctr_" + "A" * 43)
    assert_problem(r, 401, "invalid-refresh-token")


async def test_refresh_token_expires_with_its_session(api: Api) -> None:
    t = await api.tenant(roles=["viewer"], login=False)
    pair = await login_ok(api, t.users["viewer"].email)
    ttl = api.settings.auth.refresh_token_ttl_s

    api.clock.advance(ttl - 1)
    r = await refresh(api, pair["refresh_token"])
    assert r.status_code == 200, r.text
    # Rotation does not extend the session: its lifetime counts from the login.
    api.clock.advance(1)
    assert_problem(await refresh(api, r.json()["refresh_token"]), 401, "invalid-refresh-token")
    assert_unauthorized(await me(api, r.json()["access_token"]))


async def test_logout_ends_only_this_session(api: Api) -> None:
    t = await api.tenant(roles=["viewer"], login=False)
    email = t.users["viewer"].email
    other = await login_ok(api, email)
    pair = await login_ok(api, email)

    r = await api.client.post(LOGOUT, headers=bearer(pair["access_token"]))

    assert r.status_code == 204, r.text
    assert_unauthorized(await me(api, pair["access_token"]))
    assert_problem(await refresh(api, pair["refresh_token"]), 401, "invalid-refresh-token")
    assert_unauthorized(await api.client.post(LOGOUT, headers=bearer(pair["access_token"])))
    assert (await me(api, other["access_token"])).status_code == 200
    assert (await refresh(api, other["refresh_token"])).status_code == 200
