"""Fixtures of the single sign-on tests: a real OpenID provider on loopback (node's
`oidc-provider`), an app that may reach it, and a browser that goes through both."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import pytest_asyncio

from ctafleet.auth.sso.service import BROWSER_COOKIE
from ctafleet.kernel.clock import FrozenClock
from tests.auth.sso.provider import Client, Provider, start_provider
from tests.kit.app import Api, Backend, TenantUsers, own_app

CLIENT_ID = "ctafleet-tests"
CLIENT_SECRET = "sso-tests-client-secret-0123456789"
SSO = "/api/v1/tenant/sso"
LOOPBACK = ["127.0.0.0/8", "::1/128"]


class WallClock(FrozenClock):
    """The wall clock, moved forward by `advance`: the provider stamps its tokens with real
    time, so the app under test must live at the same time (and tests still skip ahead)."""

    def __init__(self) -> None:
        super().__init__()
        self.offset = timedelta()

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provider]:
    running = start_provider(
        tmp_path_factory.mktemp("oidc-provider"),
        [Client(CLIENT_ID, CLIENT_SECRET, "http://testserver/api/v1/auth/oidc/callback")],
    )
    yield running
    running.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def sso_api(backend: Backend, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Api]:
    """An app whose settings let it reach a provider on loopback (the default refuses)."""
    async with own_app(
        backend,
        tmp_path_factory.mktemp("sso-data"),
        clock=WallClock(),
        public_url="http://testserver",
        oidc={"allowed_networks": LOOPBACK},
    ) as api:
        yield api


@dataclass
class Browser:
    """One browser: its sign-in cookie for the app, and its way through the provider."""

    api: Api
    provider: Provider
    cookie: str | None = None

    def _headers(self) -> dict[str, str]:
        return {"Cookie": f"{BROWSER_COOKIE}={self.cookie}"} if self.cookie else {}

    async def start(self, slug: str) -> httpx.Response:
        r = await self.api.client.get(f"/api/v1/auth/oidc/{slug}/login", headers=self._headers())
        self.api.client.cookies.clear()  # the browser keeps its cookie, not the shared client
        self.cookie = r.cookies.get(BROWSER_COOKIE) or self.cookie
        return r

    def authorize(self, started: httpx.Response, login: str) -> str:
        assert started.status_code == 302, started.text
        return self.provider.authorize(started.headers["location"], login)

    async def callback(self, url: str) -> httpx.Response:
        r = await self.api.client.get(url, headers=self._headers())
        self.api.client.cookies.clear()
        return r

    async def sign_in(self, slug: str, login: str) -> httpx.Response:
        return await self.callback(self.authorize(await self.start(slug), login))


@pytest.fixture
def browser(sso_api: Api, provider: Provider) -> Browser:
    sso_api.client.cookies.clear()
    return Browser(sso_api, provider)


def sso_body(provider: Provider, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "issuer": provider.issuer,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "allow_signup": True,
    }
    body.update(overrides)
    return body


async def configure(
    api: Api, tenant: TenantUsers, provider: Provider, **overrides: Any
) -> dict[str, Any]:
    r = await api.client.put(SSO, json=sso_body(provider, **overrides), headers=tenant.headers())
    assert r.status_code == 200, r.text
    config: dict[str, Any] = r.json()
    return config


def account(provider: Provider, **claims: Any) -> tuple[str, str]:
    """A new account at the provider: (its login, its e-mail address)."""
    login = f"user-{uuid.uuid4().hex[:12]}"
    email = f"{login}@sso.example.org"
    provider.account(login, **{"email": email, "name": f"Person {login}", **claims})
    return login, email


@pytest.fixture
def unused_port() -> int:
    """A loopback port nothing listens on."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port
