"""A provider that is not there: not installed here (the tests fail under
CTAFLEET_REQUIRE_SERVICES=1 rather than skip), or gone in the middle of a sign-in (503)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.auth.helpers import audit_events
from tests.auth.sso.conftest import CLIENT_ID, CLIENT_SECRET, Browser, account, configure
from tests.auth.sso.provider import Client, start_provider
from tests.kit.app import Api
from tests.kit.problems import assert_problem

CLIENTS = [Client(CLIENT_ID, CLIENT_SECRET, "http://testserver/api/v1/auth/oidc/callback")]


@pytest.mark.parametrize("missing", ["package", "node"])
def test_a_missing_provider_fails_when_services_are_required(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, missing: str
) -> None:
    empty = tmp_path / "node_modules"
    empty.mkdir()
    if missing == "node":
        monkeypatch.setattr("tests.auth.sso.provider.shutil.which", lambda _name: None)

    monkeypatch.setattr("tests.conftest.REQUIRE_SERVICES", True)
    with pytest.raises(pytest.fail.Exception, match="CTAFLEET_REQUIRE_SERVICES=1 but"):
        start_provider(tmp_path / "provider", CLIENTS, modules=empty)

    monkeypatch.setattr("tests.conftest.REQUIRE_SERVICES", False)
    with pytest.raises(pytest.skip.Exception, match="not installed"):
        start_provider(tmp_path / "provider", CLIENTS, modules=empty)


async def test_a_provider_gone_during_a_sign_in_is_a_503(sso_api: Api, tmp_path: Path) -> None:
    gone = start_provider(tmp_path / "provider", CLIENTS)
    try:
        t = await sso_api.tenant(roles=["admin"])
        await configure(sso_api, t, gone)
        login, _ = account(gone)
        browser = Browser(sso_api, gone)
        callback = browser.authorize(await browser.start(t.slug), login)
    finally:
        gone.stop()

    r = await browser.callback(callback)

    body = assert_problem(r, 503, "sso-provider-unavailable")
    assert gone.issuer in body["detail"]
    failed = await audit_events(sso_api, t.tokens["admin"], action="login_failed")
    assert [e["changes"]["reason"]["after"] for e in failed] == ["provider_unavailable"]
