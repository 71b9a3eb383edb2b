"""The cached check of a login session: a revocation reaches the replica it was made on at once
and every other replica within `auth.session_cache_ttl_s`, never later."""

from __future__ import annotations

from pathlib import Path

from tests.auth.helpers import LOGOUT, bearer, login_ok, me
from tests.kit.app import Api, Backend, make_settings, make_tenant, own_app
from tests.kit.problems import assert_problem, assert_unauthorized

TTL_S = 5.0


async def test_a_revocation_reaches_other_replicas_within_the_bound(
    backend: Backend, tmp_path: Path
) -> None:
    settings = make_settings(backend, tmp_path, auth={"session_cache_ttl_s": TTL_S})
    async with (
        own_app(backend, tmp_path, settings=settings) as a,
        own_app(backend, tmp_path, settings=settings) as b,
    ):
        t = await make_tenant(a, roles=["admin", "viewer"], login=False)
        pair = await login_ok(a, t.users["viewer"].email)
        token = pair["access_token"]
        for replica in (a, b):  # both have checked (and cached) the session
            assert (await me(replica, token)).status_code == 200

        r = await a.client.post(LOGOUT, headers=bearer(token))
        assert r.status_code == 204, r.text
        assert_unauthorized(await me(a, token))  # the replica that revoked: at once
        b.clock.advance(TTL_S - 1)
        assert (await me(b, token)).status_code == 200  # another replica: within the bound
        b.clock.advance(2)
        assert_unauthorized(await me(b, token))  # and not a moment after it


async def test_a_role_change_reaches_other_replicas_within_the_bound(
    backend: Backend, tmp_path: Path
) -> None:
    settings = make_settings(backend, tmp_path, auth={"session_cache_ttl_s": TTL_S})
    async with (
        own_app(backend, tmp_path, settings=settings) as a,
        own_app(backend, tmp_path, settings=settings) as b,
    ):
        t = await make_tenant(a, roles=["admin", "fleet_manager"], login=False)
        admin = (await login_ok(a, t.users["admin"].email))["access_token"]
        manager = t.users["fleet_manager"]
        token = (await login_ok(a, manager.email))["access_token"]
        body = {"unit_number": "X"}  # a 422 that only a role with vehicles:write reaches
        assert (
            await b.client.post("/api/v1/vehicles", json=body, headers=bearer(token))
        ).status_code == 422

        # Demoting a user ends their sessions; a replica that cached one learns within the bound.
        r = await a.client.patch(
            f"/api/v1/users/{manager.id}", json={"role": "viewer"}, headers=bearer(admin)
        )
        assert r.status_code == 200, r.text
        assert_unauthorized(await me(a, token))
        assert (
            await b.client.post("/api/v1/vehicles", json=body, headers=bearer(token))
        ).status_code == 422
        b.clock.advance(TTL_S + 1)
        assert_unauthorized(await me(b, token))
        # Logged in again, the new role applies everywhere.
        token = (await login_ok(b, manager.email))["access_token"]
        r = await a.client.post("/api/v1/vehicles", json=body, headers=bearer(token))
        assert_problem(r, 403, "forbidden")


async def test_no_cache_checks_every_request(backend: Backend, tmp_path: Path) -> None:
    settings = make_settings(backend, tmp_path, auth={"session_cache_ttl_s": 0})
    async with (
        own_app(backend, tmp_path, settings=settings) as a,
        own_app(backend, tmp_path, settings=settings) as b,
    ):
        assert a.app.state.ctafleet.session_cache is None
        t = await make_tenant(a, roles=["viewer"], login=False)
        token = (await login_ok(a, t.users["viewer"].email))["access_token"]
        assert (await me(b, token)).status_code == 200
        assert (await a.client.post(LOGOUT, headers=bearer(token))).status_code == 204
        assert_unauthorized(await me(b, token))


async def test_the_cache_holds_no_secret_and_is_bounded(api: Api) -> None:
    cache = api.app.state.ctafleet.session_cache
    assert cache is not None
    assert cache.maxsize >= 1000
    t = await api.tenant(roles=["viewer"])
    assert (await me(api, t.tokens["viewer"])).status_code == 200
    entry = next(iter(cache.values()))
    assert not any(
        word in name for name in type(entry).__dataclass_fields__ for word in ("hash", "secret")
    )
