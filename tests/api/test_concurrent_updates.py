"""Concurrent writes to one object end in 200s and conflicts, never a 500."""

from __future__ import annotations

import asyncio

from tests.kit.app import Api


async def test_concurrent_tenant_updates_never_fail_with_500(api: Api) -> None:
    tenant = await api.tenant(roles=["admin"])
    headers = tenant.headers("admin")
    answers = await asyncio.gather(
        *(
            api.client.patch("/api/v1/tenant", json={"name": f"Name {i}"}, headers=headers)
            for i in range(8)
        )
    )
    statuses = [r.status_code for r in answers]
    assert set(statuses) <= {200, 409}, [r.text for r in answers if r.status_code >= 500]
    assert 200 in statuses
    final = (await api.client.get("/api/v1/tenant", headers=headers)).json()
    winners = {r.json()["name"] for r in answers if r.status_code == 200}
    assert final["name"] in winners
    for r in answers:
        if r.status_code == 409:
            assert r.json()["type"] == "/problems/concurrent-update"
