"""The tenant admin's single sign-on configuration: validated against the provider, its secret
never shown, and the server's outbound address policy (SSRF) with its time limit."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from ctafleet.auth.sso.netguard import address_allowed, networks
from tests.auth.helpers import audit_events
from tests.auth.sso.conftest import (
    CLIENT_SECRET,
    LOOPBACK,
    SSO,
    Browser,
    WallClock,
    account,
    configure,
    sso_body,
)
from tests.auth.sso.provider import Provider
from tests.kit.app import Api, own_app
from tests.kit.problems import assert_problem


async def test_the_configuration_is_read_back_without_its_secret(
    sso_api: Api, provider: Provider
) -> None:
    t = await sso_api.tenant(roles=["admin"])
    assert_problem(await sso_api.client.get(SSO, headers=t.headers()), 404, "not-found")

    put = await sso_api.client.put(SSO, json=sso_body(provider), headers=t.headers())

    assert put.status_code == 200, put.text
    assert put.headers["etag"] == '"v1"'
    got = await sso_api.client.get(SSO, headers=t.headers())
    assert got.status_code == 200, got.text
    config = got.json()
    assert config == put.json()
    assert CLIENT_SECRET not in got.text
    assert "client_secret" not in config
    assert config["client_secret_set"] is True
    assert config["client_secret_source"] == "tenant"
    assert config["login_url"] == f"http://testserver/api/v1/auth/oidc/{t.slug}/login"
    assert config["redirect_uri"] == "http://testserver/api/v1/auth/oidc/callback"
    # A change without a secret keeps the stored one; a stale If-Match changes nothing.
    body = sso_body(provider, default_role="mechanic")
    del body["client_secret"]
    stale = await sso_api.client.put(SSO, json=body, headers={**t.headers(), "If-Match": '"v0"'})
    assert_problem(stale, 412, "precondition-failed")
    kept = await sso_api.client.put(SSO, json=body, headers={**t.headers(), "If-Match": '"v1"'})
    assert kept.status_code == 200, kept.text
    assert kept.json()["default_role"] == "mechanic"
    assert kept.json()["client_secret_set"] is True
    rotated = await sso_api.client.put(
        SSO, json=sso_body(provider, client_secret="a-new-secret-value-9876"), headers=t.headers()
    )
    assert rotated.status_code == 200, rotated.text
    events = await audit_events(sso_api, t.tokens["admin"], entity_type="sso_config")
    assert [e["action"] for e in sorted(events, key=lambda e: e["occurred_at"])] == [
        "create",
        "update",
        "update",
    ]
    text = json.dumps(events)
    assert CLIENT_SECRET not in text
    assert "a-new-secret-value-9876" not in text
    secrets_changed = [
        e["changes"]["client_secret"] for e in events if "client_secret" in e["changes"]
    ]
    assert {"before": "[redacted]", "after": "[redacted]"} in secrets_changed


@pytest.mark.parametrize("role", ["fleet_manager", "viewer", "auditor"])
async def test_only_admins_read_or_change_it(sso_api: Api, provider: Provider, role: str) -> None:
    t = await sso_api.tenant(roles=["admin", role])
    await configure(sso_api, t, provider)

    read = await sso_api.client.get(SSO, headers=t.headers(role))
    write = await sso_api.client.put(SSO, json=sso_body(provider), headers=t.headers(role))

    assert_problem(read, 403, "forbidden")
    assert_problem(write, 403, "forbidden")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"issuer": "ftp://login.example.org"}, "issuer"),
        ({"issuer": "not a url at all"}, "issuer"),
        ({"issuer": "https://user:pass@login.example.org"}, "issuer"),
        ({"issuer": "https://login.example.org:99999"}, "issuer"),
        ({"issuer": "https://10.1.2.3/realms/fleet"}, "issuer"),
        ({"issuer": "https://169.254.169.254/latest"}, "issuer"),
        ({"issuer": "https://[::1]:8443/"}, "issuer"),
        ({"issuer": "https://login.microsoftonline.com/common/v2.0"}, "issuer"),
        (
            {"issuer": "https://login.microsoftonline.com/3f0c2c2e-59d0-4b4e-9a6f-0123456789ab"},
            "issuer",
        ),
        (
            {
                "issuer": "https://login.microsoftonline.com/3f0c2c2e-59d0-4b4e-9a6f-0123456789ab/v2.0",
                "entra_tenant_id": "00000000-0000-0000-0000-000000000000",
            },
            "entra_tenant_id",
        ),
        ({"role_mappings": [{"value": "g", "role": "superuser"}]}, "role_mappings"),
        ({"default_role": "root"}, "default_role"),
        ({"client_id": ""}, "client_id"),
        ({"unknown": True}, "unknown"),
        ({"break_glass_user_id": "not-a-uuid"}, "break_glass_user_id"),
    ],
)
async def test_bad_configurations_are_422_before_anything_is_fetched(
    sso_api: Api, provider: Provider, change: dict[str, Any], field: str
) -> None:
    """None of these reaches the network: the address checks come before any request."""
    t = await sso_api.tenant(roles=["admin"])

    r = await sso_api.client.put(SSO, json=sso_body(provider, **change), headers=t.headers())

    body = assert_problem(r, 422)
    assert field in json.dumps(body["errors"]), body


async def test_the_provider_is_checked_before_it_is_saved(
    sso_api: Api, provider: Provider, unused_port: int
) -> None:
    t = await sso_api.tenant(roles=["admin"])
    missing = await sso_api.client.put(
        SSO, json=sso_body(provider, issuer=f"http://127.0.0.1:{unused_port}"), headers=t.headers()
    )
    # The provider serves no discovery document under this path: not its issuer.
    elsewhere = await sso_api.client.put(
        SSO, json=sso_body(provider, issuer=f"{provider.issuer}/tenant-b"), headers=t.headers()
    )
    no_secret = sso_body(provider)
    del no_secret["client_secret"]
    secretless = await sso_api.client.put(SSO, json=no_secret, headers=t.headers())

    assert_problem(missing, 422, "sso-discovery-failed")
    assert_problem(elsewhere, 422, "sso-discovery-failed")
    assert_problem(secretless, 422, "validation-error")
    assert_problem(await sso_api.client.get(SSO, headers=t.headers()), 404)


async def test_by_default_no_provider_may_live_on_a_private_or_loopback_address(
    api: Api, provider: Provider
) -> None:
    """The default settings (no allowed networks), with the provider on loopback: refused
    whatever the spelling, and for a host name on the address it resolves to."""
    t = await api.tenant(roles=["admin"])
    port = provider.issuer.rsplit(":", 1)[1]
    results = {}
    for issuer in (
        provider.issuer,  # http on loopback: only where loopback is allowed
        f"https://127.0.0.1:{port}",
        f"https://localhost:{port}",  # a name: its address is checked at connection time
    ):
        r = await api.client.put(SSO, json=sso_body(provider, issuer=issuer), headers=t.headers())
        results[issuer] = assert_problem(r, 422)
    assert "https" in results[provider.issuer]["detail"]
    assert "public address" in results[f"https://127.0.0.1:{port}"]["detail"]
    assert "public address" in results[f"https://localhost:{port}"]["detail"]
    assert results[f"https://localhost:{port}"]["type"] == "/problems/sso-discovery-failed"


@pytest.fixture
async def silent_server() -> AsyncIterator[int]:
    """A loopback server that accepts connections and never answers."""
    held: list[asyncio.StreamWriter] = []

    async def hold(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    for writer in held:
        writer.close()
    server.close()
    await server.wait_closed()


async def test_a_provider_that_does_not_answer_times_out(
    sso_api: Api, provider: Provider, silent_server: int, tmp_path: Path
) -> None:
    t = await sso_api.tenant(roles=["admin"])
    oidc = sso_api.settings.oidc.model_copy(update={"http_timeout_s": 0.3})
    settings = sso_api.settings.model_copy(update={"oidc": oidc})
    async with own_app(sso_api.backend, tmp_path, settings=settings, clock=WallClock()) as other:
        started = time.monotonic()
        r = await other.client.put(
            SSO,
            json=sso_body(provider, issuer=f"http://127.0.0.1:{silent_server}"),
            headers=t.headers(),
        )
        elapsed = time.monotonic() - started

    body = assert_problem(r, 422, "sso-discovery-failed")
    assert "in time" in body["detail"]
    assert elapsed < 2, elapsed


async def test_a_secret_in_the_settings_wins_over_the_stored_one(
    sso_api: Api, provider: Provider, tmp_path: Path
) -> None:
    t = await sso_api.tenant(roles=["admin"])
    oidc = sso_api.settings.oidc.model_copy(
        update={"client_secrets": {t.slug: SecretStr(CLIENT_SECRET)}}
    )
    settings = sso_api.settings.model_copy(update={"oidc": oidc})
    async with own_app(sso_api.backend, tmp_path, settings=settings, clock=WallClock()) as other:
        # The stored secret is wrong: only the settings' one can work.
        config = await configure(other, t, provider, client_secret="a-stale-stored-secret")
        assert config["client_secret_source"] == "settings"
        login, _ = account(provider)

        r = await Browser(other, provider).sign_in(t.slug, login)

        assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("8.8.8.8", True),
        ("2001:4860:4860::8888", True),
        ("10.0.0.1", False),
        ("172.16.5.4", False),
        ("192.168.1.1", False),
        ("127.0.0.1", False),
        ("169.254.169.254", False),  # cloud metadata services
        ("100.64.0.1", False),  # carrier-grade NAT
        ("0.0.0.0", False),  # noqa: S104 - an address under test, not a bind
        ("224.0.0.1", False),
        ("::1", False),
        ("fe80::1", False),
        ("fd00::1", False),
        ("::ffff:10.0.0.1", False),  # IPv4-mapped: judged as the IPv4 address
        ("::ffff:8.8.8.8", True),
    ],
)
def test_only_public_addresses_are_reachable_by_default(address: str, allowed: bool) -> None:
    assert address_allowed(ipaddress.ip_address(address), ()) is allowed


def test_listed_networks_are_reachable() -> None:
    loopback = networks(LOOPBACK)
    assert address_allowed(ipaddress.ip_address("127.0.0.1"), loopback)
    assert address_allowed(ipaddress.ip_address("::ffff:127.0.0.1"), loopback)
    assert address_allowed(ipaddress.ip_address("::1"), loopback)
    assert not address_allowed(ipaddress.ip_address("10.0.0.1"), loopback)
