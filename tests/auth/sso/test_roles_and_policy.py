"""Roles from the provider's groups and app roles, and the tenant that requires single sign-on
(password logins refused, but for the break-glass admin)."""

from __future__ import annotations

from tests.auth.helpers import audit_events, login, me
from tests.auth.sso.conftest import SSO, Browser, account, configure, sso_body
from tests.auth.sso.provider import Provider
from tests.kit.app import PASSWORD, Api
from tests.kit.factories import user_body
from tests.kit.problems import assert_problem

FLEET_GROUP = "6b1f1a52-0c1e-4d7a-8e33-5d0c8f6c9a01"  # an Entra ID group's object id
ADMIN_APP_ROLE = "CTAFleet.Admin"  # an app role's value (the `roles` claim)


async def _role(api: Api, r: object) -> str:
    assert r.status_code == 200, r.text  # type: ignore[attr-defined]
    profile = await me(api, r.json()["access_token"])  # type: ignore[attr-defined]
    return str(profile.json()["role"])


async def test_groups_and_app_roles_map_to_roles_first_match_wins(
    sso_api: Api, provider: Provider, browser: Browser
) -> None:
    t = await sso_api.tenant(roles=["admin"])
    mappings = [
        {"value": FLEET_GROUP, "role": "fleet_manager"},
        {"value": ADMIN_APP_ROLE, "role": "admin"},
    ]
    await configure(sso_api, t, provider, role_mappings=mappings, default_role="viewer")
    in_group, _ = account(provider, groups=[FLEET_GROUP, "unrelated-group"])
    with_app_role, _ = account(provider, roles=[ADMIN_APP_ROLE])
    both, _ = account(provider, groups=[FLEET_GROUP], roles=[ADMIN_APP_ROLE])
    neither, _ = account(provider, groups=["unrelated-group"])

    assert await _role(sso_api, await browser.sign_in(t.slug, in_group)) == "fleet_manager"
    assert await _role(sso_api, await browser.sign_in(t.slug, with_app_role)) == "admin"
    assert await _role(sso_api, await browser.sign_in(t.slug, both)) == "fleet_manager"
    assert await _role(sso_api, await browser.sign_in(t.slug, neither)) == "viewer"


async def test_roles_follow_the_directory_only_when_synced(
    sso_api: Api, provider: Provider, browser: Browser
) -> None:
    t = await sso_api.tenant(roles=["admin"])
    mappings = [{"value": FLEET_GROUP, "role": "fleet_manager"}]
    await configure(sso_api, t, provider, role_mappings=mappings)
    login_, email = account(provider, groups=[FLEET_GROUP])
    assert await _role(sso_api, await browser.sign_in(t.slug, login_)) == "fleet_manager"

    # Out of the group: without sync the role set at the first sign-in stays.
    provider.account(login_, email=email, groups=[])
    assert await _role(sso_api, await browser.sign_in(t.slug, login_)) == "fleet_manager"

    await configure(sso_api, t, provider, role_mappings=mappings, sync_roles=True)
    r = await browser.sign_in(t.slug, login_)
    assert await _role(sso_api, r) == "viewer"
    changes = [
        e["changes"]
        for e in await audit_events(sso_api, t.tokens["admin"], action="update", entity_type="user")
    ]
    assert changes == [
        {
            "role": {"before": "fleet_manager", "after": "viewer"},
            "reason": {"before": None, "after": "sso_role_sync"},
        }
    ]


async def test_requiring_sso_refuses_password_logins_but_for_the_break_glass_admin(
    sso_api: Api, provider: Provider, browser: Browser
) -> None:
    t = await sso_api.tenant(roles=["admin", "viewer"])
    admin, viewer = t.users["admin"], t.users["viewer"]
    # Requiring SSO without a way in when the provider is down is refused...
    r = await sso_api.client.put(
        SSO, json=sso_body(provider, require_sso=True), headers=t.headers()
    )
    assert_problem(r, 422, "validation-error")
    # ... and so is a break-glass account that is not an admin.
    body = sso_body(provider, require_sso=True, break_glass_user_id=str(viewer.id))
    r = await sso_api.client.put(SSO, json=body, headers=t.headers())
    assert_problem(r, 422, "validation-error")
    await configure(sso_api, t, provider, require_sso=True, break_glass_user_id=str(admin.id))

    refused = await login(sso_api, viewer.email)
    wrong_password = await login(sso_api, viewer.email, "Not-The-Password-42")
    break_glass = await login(sso_api, admin.email)

    body = assert_problem(refused, 403, "sso-required")
    assert f"/api/v1/auth/oidc/{t.slug}/login" in body["detail"]
    # Without the password nobody learns that the account exists or needs SSO.
    assert_problem(wrong_password, 401, "invalid-credentials")
    assert break_glass.status_code == 200, break_glass.text
    token = break_glass.json()["access_token"]
    failed = await audit_events(sso_api, token, action="login_failed", entity_id=viewer.id)
    assert [e["changes"].get("reason", {}).get("after") for e in failed] == [None, "sso_required"]
    # Single sign-on itself still works for everyone.
    login_, _ = account(provider)
    assert (await browser.sign_in(t.slug, login_)).status_code == 200
    # A break-glass admin who is demoted loses the exemption.
    second = await sso_api.client.post(
        "/api/v1/users", json=user_body(role="admin"), headers=t.headers()
    )
    assert second.status_code == 201, second.text
    await configure(sso_api, t, provider, require_sso=True, break_glass_user_id=second.json()["id"])
    assert (await login(sso_api, second.json()["email"])).status_code == 200
    r = await sso_api.client.patch(
        f"/api/v1/users/{second.json()['id']}", json={"role": "viewer"}, headers=t.headers()
    )
    assert r.status_code == 200, r.text
    assert_problem(await login(sso_api, second.json()["email"]), 403, "sso-required")
    # Switching single sign-on off lifts the requirement: nobody is locked out.
    await configure(
        sso_api, t, provider, enabled=False, require_sso=True, break_glass_user_id=str(admin.id)
    )
    assert (await login(sso_api, viewer.email, PASSWORD)).status_code == 200
