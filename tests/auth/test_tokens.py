"""Access tokens: every forged, altered or stale token is a 401 that asks for a bearer token."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from collections.abc import Callable
from typing import Any

import jwt
import pytest

from tests.auth.helpers import ME, CachedLogin, bearer, claims_of, login_ok, me
from tests.kit.app import Api, TenantUsers
from tests.kit.problems import assert_unauthorized


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _segments(header: dict[str, Any], claims: dict[str, Any]) -> str:
    return ".".join(
        _b64(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims)
    )


def _alg_none(claims: dict[str, Any], _key: str) -> str:
    return _segments({"alg": "none", "typ": "JWT"}, claims) + "."


def _rs256_signed_with_the_hmac_key(claims: dict[str, Any], key: str) -> str:
    # The classic key-confusion forgery: claims "RS256" but carries an HMAC under the secret,
    # which a verifier that trusts the header's `alg` would accept.
    signing_input = _segments({"alg": "RS256", "typ": "JWT"}, claims)
    signature = hmac.new(key.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def _hs256(claims: dict[str, Any], key: str) -> str:
    return jwt.encode(claims, key, algorithm="HS256")


def _without(name: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda c: {k: v for k, v in c.items() if k != name}


def _with(**values: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda c: {**c, **values}


def _same(c: dict[str, Any]) -> dict[str, Any]:
    return c


# (claims transformation, signer): each is refused for exactly one reason.
FORGERIES: dict[str, tuple[Callable[[dict[str, Any]], dict[str, Any]], Any]] = {
    "wrong signing key": (_same, lambda c, _k: _hs256(c, "another-key-" + "x" * 40)),
    "alg none": (_same, _alg_none),
    "HS512 with the right key": (_same, lambda c, k: jwt.encode(c, k, algorithm="HS512")),
    "RS256 header, HMAC signature": (_same, _rs256_signed_with_the_hmac_key),
    "wrong issuer": (_with(iss="someone-else"), _hs256),
    "wrong audience": (_with(aud="another-api"), _hs256),
    "no issuer": (_without("iss"), _hs256),
    "no audience": (_without("aud"), _hs256),
    "no session id": (_without("sid"), _hs256),
    "no tenant id": (_without("tid"), _hs256),
    "no expiry": (_without("exp"), _hs256),
    "session that does not exist": (_with(sid=str(uuid.uuid4())), _hs256),
    "session id that is not a uuid": (_with(sid="1; DROP TABLE users"), _hs256),
    "user of another tenant id": (_with(tid=str(uuid.uuid4())), _hs256),
    "not yet valid": (_with(nbf=2**31 - 1), _hs256),
    "non-numeric expiry": (_with(exp="never"), _hs256),
}


@pytest.fixture(scope="module")
async def viewer(session_api: Api) -> TenantUsers:
    return await session_api.tenant(roles=["viewer"], login=False)


@pytest.fixture(scope="module")
def cached_login(viewer: TenantUsers) -> CachedLogin:
    return CachedLogin(viewer.users["viewer"].email)


@pytest.fixture
async def token(api: Api, cached_login: CachedLogin) -> str:
    return await cached_login.token(api)


async def test_the_reencoded_genuine_claims_are_accepted(api: Api, token: str) -> None:
    # The control for the forgeries below: re-signing the real claims correctly works, so
    # each forgery fails for its one alteration and not for something incidental.
    key = api.settings.auth.secret_key.get_secret_value()
    r = await me(api, _hs256(claims_of(token), key))
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("name", list(FORGERIES))
async def test_forged_token_is_refused(api: Api, token: str, name: str) -> None:
    transform, sign = FORGERIES[name]
    key = api.settings.auth.secret_key.get_secret_value()

    r = await me(api, sign(transform(claims_of(token)), key))

    assert_unauthorized(r)


async def test_tampered_payload_breaks_the_signature(api: Api, token: str) -> None:
    header, _payload, signature = token.split(".")
    claims = {**claims_of(token), "role": "admin"}
    payload = _b64(json.dumps(claims, separators=(",", ":")).encode())

    assert_unauthorized(await me(api, f"{header}.{payload}.{signature}"))


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer not-a-jwt"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
    ],
    ids=["none", "empty bearer", "garbage", "basic"],
)
async def test_missing_or_malformed_credentials(api: Api, headers: dict[str, str]) -> None:
    assert_unauthorized(await api.client.get(ME, headers=headers))


async def test_refresh_token_is_not_an_access_token(api: Api, viewer: TenantUsers) -> None:
    pair = await login_ok(api, viewer.users["viewer"].email)
    assert_unauthorized(await api.client.get(ME, headers=bearer(pair["refresh_token"])))


async def test_access_token_expires_after_its_ttl(api: Api, viewer: TenantUsers) -> None:
    token = (await login_ok(api, viewer.users["viewer"].email))["access_token"]
    ttl = api.settings.auth.access_token_ttl_s

    api.clock.advance(ttl - 1)
    r = await me(api, token)
    assert r.status_code == 200, r.text

    api.clock.advance(1)
    assert_unauthorized(await me(api, token))
