"""Signing in through a real OpenID provider: the whole flow, the user it creates or finds, and
the session it opens (the same as a password login's)."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from tests.auth.helpers import audit_events, bearer, claims_of, login_ok, me, refresh
from tests.auth.sso.conftest import CLIENT_ID, CLIENT_SECRET, Browser, account, configure
from tests.auth.sso.provider import Provider
from tests.kit.app import Api
from tests.kit.problems import assert_problem


async def test_first_sign_in_creates_the_user_and_the_next_finds_it(
    sso_api: Api, provider: Provider, browser: Browser, capfd: pytest.CaptureFixture[str]
) -> None:
    t = await sso_api.tenant(roles=["admin"])
    await configure(sso_api, t, provider, default_role="dispatcher")
    login, email = account(provider)

    started = await browser.start(t.slug)

    # To the provider: the code flow with PKCE (S256), a state and a nonce, and no secret.
    assert started.status_code == 302, started.text
    location = urlsplit(started.headers["location"])
    assert f"{location.scheme}://{location.netloc}" == provider.issuer
    query = {k: v[0] for k, v in parse_qs(location.query).items()}
    assert query["response_type"] == "code"
    assert query["client_id"] == CLIENT_ID
    assert query["redirect_uri"] == "http://testserver/api/v1/auth/oidc/callback"
    assert set(query["scope"].split()) == {"openid", "email", "profile"}
    assert query["code_challenge_method"] == "S256"
    assert len(query["code_challenge"]) == 43
    assert len(query["state"]) >= 43
    assert len(query["nonce"]) >= 43
    assert CLIENT_SECRET not in started.headers["location"]
    cookie = started.headers["set-cookie"].lower()
    assert "httponly" in cookie
    assert "samesite=lax" in cookie
    assert "path=/api/v1/auth/oidc/callback" in cookie

    first = await browser.callback(browser.authorize(started, login))

    assert first.status_code == 200, first.text
    pair = first.json()
    assert pair["token_type"] == "bearer"
    assert pair["mfa_enrolment_required"] is False
    profile = (await me(sso_api, pair["access_token"])).json()
    assert profile["email"] == email
    assert profile["full_name"] == f"Person {login}"
    assert profile["role"] == "dispatcher"
    # The same session as a password login: the refresh token rotates as usual.
    rotated = await refresh(sso_api, pair["refresh_token"])
    assert rotated.status_code == 200, rotated.text

    second = await browser.sign_in(t.slug, login)

    assert second.status_code == 200, second.text
    assert claims_of(second.json()["access_token"])["sub"] == profile["id"]
    assert claims_of(second.json()["access_token"])["sid"] != claims_of(pair["access_token"])["sid"]
    admin = t.tokens["admin"]
    users = await sso_api.client.get("/api/v1/users", headers=bearer(admin))
    assert sorted(u["email"] for u in users.json()["data"]) == sorted(
        [email, t.users["admin"].email]
    )
    logins = await audit_events(sso_api, admin, action="login", entity_id=profile["id"])
    assert [e["changes"]["method"]["after"] for e in logins] == ["oidc", "oidc"]
    created = await audit_events(sso_api, admin, action="create", entity_id=profile["id"])
    assert created[0]["changes"]["method"]["after"] == "oidc"
    assert created[0]["changes"]["password_hash"]["after"] == "[redacted]"
    # Neither the client secret nor the provider's tokens reach a log line.
    out, err = capfd.readouterr()
    for secret in (CLIENT_SECRET, query["state"], query["nonce"], pair["access_token"]):
        assert secret not in out + err


async def test_password_logins_say_their_method(sso_api: Api) -> None:
    t = await sso_api.tenant(roles=["admin"], login=False)
    pair = await login_ok(sso_api, t.users["admin"].email)

    events = await audit_events(sso_api, pair["access_token"], action="login")

    assert [e["changes"]["method"]["after"] for e in events] == ["password"]


async def test_signing_in_needs_an_account_unless_sign_up_is_allowed(
    sso_api: Api, provider: Provider, browser: Browser
) -> None:
    t = await sso_api.tenant(roles=["admin"])
    await configure(sso_api, t, provider, allow_signup=False)
    login, _ = account(provider)

    r = await browser.sign_in(t.slug, login)

    assert_problem(r, 403, "sso-no-account")
    failed = await audit_events(sso_api, t.tokens["admin"], action="login_failed")
    assert [e["changes"]["reason"]["after"] for e in failed] == ["no_account"]
    assert failed[0]["changes"]["method"]["after"] == "oidc"


async def test_an_e_mail_address_alone_never_joins_an_existing_account(
    sso_api: Api, provider: Provider, browser: Browser
) -> None:
    t = await sso_api.tenant(roles=["admin", "viewer"])
    viewer = t.users["viewer"]
    await configure(sso_api, t, provider)
    # The provider says this person has the viewer's address: that proves nothing here.
    login, _ = account(provider, email=viewer.email)

    refused = await browser.sign_in(t.slug, login)

    assert_problem(refused, 403, "sso-email-in-use")
    # The viewer links the provider account while logged in with their password...
    r = await sso_api.client.post("/api/v1/auth/oidc/link", headers=t.headers("viewer"))
    assert r.status_code == 200, r.text
    browser.cookie = r.cookies.get("ctafleet_sso")
    sso_api.client.cookies.clear()
    callback = browser.provider.authorize(r.json()["authorization_url"], login)
    linked = await browser.callback(callback)
    assert linked.status_code == 200, linked.text
    assert claims_of(linked.json()["access_token"])["sub"] == str(viewer.id)
    # ... and from then on signs in with it.
    again = await browser.sign_in(t.slug, login)
    assert again.status_code == 200, again.text
    assert claims_of(again.json()["access_token"])["sub"] == str(viewer.id)
    actions = [e["action"] for e in await audit_events(sso_api, t.tokens["admin"])]
    assert "sso_linked" in actions


async def test_an_unknown_organisation_and_an_unconfigured_one_look_alike(
    sso_api: Api, browser: Browser
) -> None:
    t = await sso_api.tenant(roles=["admin"], login=False)

    unknown = await browser.start("no-such-organisation")
    unconfigured = await browser.start(t.slug)
    malformed = await browser.start("Not A Slug!")

    bodies = [assert_problem(r, 404, "not-found") for r in (unknown, unconfigured, malformed)]
    assert len({b["detail"] for b in bodies}) == 1
