"""Helpers for the authentication tests: logging in, reading problems, TOTP codes, audit."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import jwt
import pyotp

from tests.kit.app import PASSWORD, Api

LOGIN = "/api/v1/auth/login"
REFRESH = "/api/v1/auth/refresh"
LOGOUT = "/api/v1/auth/logout"
ME = "/api/v1/auth/me"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def login(
    api: Api, email: str, password: str = PASSWORD, totp_code: str | None = None
) -> httpx.Response:
    body: dict[str, Any] = {"email": email, "password": password}
    if totp_code is not None:
        body["totp_code"] = totp_code
    return await api.client.post(LOGIN, json=body)


async def login_ok(
    api: Api, email: str, password: str = PASSWORD, totp_code: str | None = None
) -> dict[str, Any]:
    r = await login(api, email, password, totp_code)
    assert r.status_code == 200, r.text
    pair: dict[str, Any] = r.json()
    return pair


async def refresh(api: Api, refresh_token: str) -> httpx.Response:
    return await api.client.post(REFRESH, json={"refresh_token": refresh_token})


async def me(api: Api, token: str) -> httpx.Response:
    return await api.client.get(ME, headers=bearer(token))


def claims_of(token: str) -> dict[str, Any]:
    """The payload of a token, read without checking it (to build forged variants)."""
    payload: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return payload


def totp_code(api: Api, secret: str, offset_steps: int = 0) -> str:
    return str(pyotp.TOTP(secret).at(api.clock.now(), counter_offset=offset_steps))


def wrong_totp_code(api: Api, secret: str) -> str:
    """A well-formed code that no step inside the accepted window produces."""
    valid = {totp_code(api, secret, offset) for offset in (-1, 0, 1)}
    return next(c for c in (f"{n:06d}" for n in range(10**6)) if c not in valid)


async def enrol_totp(api: Api, token: str) -> tuple[str, list[str]]:
    """TOTP enrolment through the API: (secret, recovery codes)."""
    r = await api.client.post("/api/v1/auth/mfa/setup", headers=bearer(token))
    assert r.status_code == 200, r.text
    secret = r.json()["secret"]
    r = await api.client.post(
        "/api/v1/auth/mfa/verify", headers=bearer(token), json={"code": totp_code(api, secret)}
    )
    assert r.status_code == 200, r.text
    codes: list[str] = r.json()["recovery_codes"]
    # The enrolment code is spent for its time step: the next login needs the next step.
    api.clock.advance(30)
    return secret, codes


async def audit_events(api: Api, token: str, **params: Any) -> list[dict[str, Any]]:
    query = {"limit": "500", **{k: str(v) for k, v in params.items()}}
    r = await api.client.get("/api/v1/audit-events", headers=bearer(token), params=query)
    assert r.status_code == 200, r.text
    events: list[dict[str, Any]] = r.json()["data"]
    return events


def unique_email(local: str = "user") -> str:
    return f"{local}@{uuid.uuid4().hex[:12]}.example.org"


class CachedLogin:
    """An access token reused across tests, renewed once the shared clock has moved it to
    (or near) expiry: logins cost an Argon2 verification each."""

    def __init__(self, email: str) -> None:
        self.email = email
        self._token: str | None = None
        self._expires_at = 0.0

    async def token(self, api: Api) -> str:
        now = api.clock.now().timestamp()
        if self._token is None or now > self._expires_at - 60:
            pair = await login_ok(api, self.email)
            self._token = str(pair["access_token"])
            self._expires_at = now + int(pair["expires_in"])
        return self._token
