from __future__ import annotations

from tests.conftest import Api, TenantUsers


async def test_login_and_me(api: Api, tenant: TenantUsers) -> None:
    r = await api.client.get("/api/v1/auth/me", headers=tenant.headers("viewer"))
    assert r.status_code == 200, r.text
    assert r.json()["role"] == "viewer"
