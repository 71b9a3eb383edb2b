"""What the callback refuses: ID tokens that do not prove the sign-in (forged signature, another
audience, another nonce, another directory, a key nobody published), a state used twice, from
another browser or too late; and the provider's key rotation it follows."""

from __future__ import annotations

from typing import Any

import pytest

from tests.auth.helpers import audit_events, claims_of
from tests.auth.sso.conftest import Browser, account, configure
from tests.auth.sso.provider import Provider
from tests.kit.app import Api, TenantUsers
from tests.kit.problems import assert_problem


async def _reasons(api: Api, t: TenantUsers) -> list[str]:
    failed = await audit_events(api, t.tokens["admin"], action="login_failed", sort="occurred_at")
    return [e["changes"]["reason"]["after"] for e in failed]


async def _users(api: Api, t: TenantUsers) -> int:
    r = await api.client.get("/api/v1/users", headers=t.headers())
    return len(r.json()["data"])


@pytest.mark.parametrize(
    ("mode", "claims", "reason"),
    [
        ("bad-signature", {}, "bad_signature"),
        ("claims", {"aud": "another-application"}, "wrong_audience"),
        ("claims", {"nonce": "a-nonce-of-another-sign-in"}, "nonce_mismatch"),
        ("claims", {"iss": "https://impostor.example.org"}, "wrong_issuer"),
        ("claims", {"exp": 1_000_000_000}, "expired"),
    ],
)
async def test_an_id_token_that_proves_nothing_signs_nobody_in(
    sso_api: Api,
    provider: Provider,
    browser: Browser,
    mode: str,
    claims: dict[str, Any],
    reason: str,
) -> None:
    t = await sso_api.tenant(roles=["admin"])
    await configure(sso_api, t, provider)
    login, _ = account(provider)
    callback = browser.authorize(await browser.start(t.slug), login)

    provider.tamper_next_token(mode, **claims)
    r = await browser.callback(callback)

    body = assert_problem(r, 401, "sso-login-failed")
    assert "access_token" not in body
    assert await _reasons(sso_api, t) == [reason]
    assert await _users(sso_api, t) == 1  # the admin: nobody was created
    # The same person, with an untouched token, gets in: the refusal was the token's.
    ok = await browser.sign_in(t.slug, login)
    assert ok.status_code == 200, ok.text


async def test_a_state_works_once_in_the_browser_that_started_it_and_not_late(
    sso_api: Api, provider: Provider, browser: Browser
) -> None:
    t = await sso_api.tenant(roles=["admin"])
    await configure(sso_api, t, provider)
    login, _ = account(provider)

    callback = browser.authorize(await browser.start(t.slug), login)
    first = await browser.callback(callback)
    replayed = await browser.callback(callback)

    assert first.status_code == 200, first.text
    assert_problem(replayed, 401, "sso-state-invalid")

    # Started here, finished in another browser (a link sent to a victim): refused.
    callback = browser.authorize(await browser.start(t.slug), login)
    elsewhere = await Browser(sso_api, provider).callback(callback)
    assert_problem(elsewhere, 401, "sso-state-invalid")
    # ... and not used up by that attempt: its own browser still finishes it.
    assert (await browser.callback(callback)).status_code == 200

    callback = browser.authorize(await browser.start(t.slug), login)
    sso_api.clock.advance(sso_api.settings.oidc.state_ttl_s + 1)
    late = await browser.callback(callback)
    assert_problem(late, 401, "sso-state-invalid")

    unknown = await browser.callback("/api/v1/auth/oidc/callback?state=made-up&code=x")
    assert_problem(unknown, 401, "sso-state-invalid")
    assert await _reasons(sso_api, t) == ["replayed_state", "other_browser", "expired_state"]


async def test_a_rotated_signing_key_is_fetched_once_and_an_unknown_one_refused(
    sso_api: Api, provider: Provider, browser: Browser
) -> None:
    t = await sso_api.tenant(roles=["admin"])
    await configure(sso_api, t, provider)
    login, _ = account(provider)
    assert (await browser.sign_in(t.slug, login)).status_code == 200
    before = provider.stats()["jwks_requests"]

    assert (await browser.sign_in(t.slug, login)).status_code == 200
    assert provider.stats()["jwks_requests"] == before  # cached

    provider.rotate_key()
    sso_api.clock.advance(sso_api.settings.oidc.jwks_refresh_interval_s + 1)
    rotated = await browser.sign_in(t.slug, login)

    assert rotated.status_code == 200, rotated.text
    assert provider.stats()["jwks_requests"] == before + 1

    # A key id the provider never published: fetched again once, still unknown, refused.
    sso_api.clock.advance(sso_api.settings.oidc.jwks_refresh_interval_s + 1)
    callback = browser.authorize(await browser.start(t.slug), login)
    provider.tamper_next_token("unknown-kid")
    assert_problem(await browser.callback(callback), 401, "sso-login-failed")
    assert provider.stats()["jwks_requests"] == before + 2
    # Another one right after: no new fetch (forged key ids cannot hammer the provider).
    callback = browser.authorize(await browser.start(t.slug), login)
    provider.tamper_next_token("unknown-kid")
    assert_problem(await browser.callback(callback), 401, "sso-login-failed")
    assert provider.stats()["jwks_requests"] == before + 2
    assert await _reasons(sso_api, t) == ["unknown_key", "unknown_key"]


async def test_entra_id_tokens_must_name_the_configured_directory(
    sso_api: Api, provider: Provider, browser: Browser
) -> None:
    t = await sso_api.tenant(roles=["admin"])
    directory = "3f0c2c2e-59d0-4b4e-9a6f-0123456789ab"
    config = await configure(sso_api, t, provider, entra_tenant_id=directory)
    assert config["entra_tenant_id"] == directory
    ours, _ = account(provider, tid=directory)
    theirs, _ = account(provider, tid="00000000-0000-0000-0000-000000000000")
    nameless, _ = account(provider)

    assert (await browser.sign_in(t.slug, ours)).status_code == 200
    assert_problem(await browser.sign_in(t.slug, theirs), 401, "sso-login-failed")
    assert_problem(await browser.sign_in(t.slug, nameless), 401, "sso-login-failed")
    assert await _reasons(sso_api, t) == ["wrong_directory", "wrong_directory"]


async def test_the_providers_refusals_and_odd_answers_are_4xx(
    sso_api: Api, provider: Provider, browser: Browser
) -> None:
    t = await sso_api.tenant(roles=["admin"])
    await configure(sso_api, t, provider)

    # The provider answers with an error (the user cancelled): 401, the error's code audited.
    state = _state(await browser.start(t.slug))
    denied = await browser.callback(
        f"/api/v1/auth/oidc/callback?state={state}&error=access_denied&error_description=no"
    )
    assert_problem(denied, 401, "sso-login-failed")
    # An answer that names another provider (RFC 9207 mix-up defence).
    state = _state(await browser.start(t.slug))
    mixed = await browser.callback(
        f"/api/v1/auth/oidc/callback?state={state}&code=abc&iss=https://other.example.org"
    )
    assert_problem(mixed, 401, "sso-login-failed")
    # A code the provider never issued: its token endpoint refuses it.
    state = _state(await browser.start(t.slug))
    forged = await browser.callback(f"/api/v1/auth/oidc/callback?state={state}&code=forged")
    assert_problem(forged, 401, "sso-login-failed")
    no_code = await browser.callback(
        f"/api/v1/auth/oidc/callback?state={_state(await browser.start(t.slug))}"
    )
    assert_problem(no_code, 401, "sso-login-failed")
    too_long = await browser.callback("/api/v1/auth/oidc/callback?state=" + "x" * 201)
    assert_problem(too_long, 422, "validation-error")
    assert await _reasons(sso_api, t) == [
        "provider_error:access_denied",
        "issuer_mismatch",
        "code_refused:invalid_grant",
        "no_code",
    ]


def _state(started: Any) -> str:
    from urllib.parse import parse_qs, urlsplit

    assert started.status_code == 302, started.text
    state: str = parse_qs(urlsplit(started.headers["location"]).query)["state"][0]
    return state


async def test_a_deactivated_user_cannot_sign_in(
    sso_api: Api, provider: Provider, browser: Browser
) -> None:
    t = await sso_api.tenant(roles=["admin"])
    await configure(sso_api, t, provider)
    login, _ = account(provider)
    first = await browser.sign_in(t.slug, login)
    user_id = claims_of(first.json()["access_token"])["sub"]
    r = await sso_api.client.patch(
        f"/api/v1/users/{user_id}", json={"is_active": False}, headers=t.headers()
    )
    assert r.status_code == 200, r.text

    assert_problem(await browser.sign_in(t.slug, login), 403, "sso-account-inactive")
