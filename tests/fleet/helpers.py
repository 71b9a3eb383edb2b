"""Shared helpers for the fleet API tests."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from tests.conftest import Api, TenantUsers, driver_body, vehicle_body

PROBLEM_JSON = "application/problem+json"


def assert_problem(r: httpx.Response, status: int, slug: str | None = None) -> dict[str, Any]:
    """The response is an RFC 9457 problem with this status (and `type` slug)."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM_JSON), r.headers["content-type"]
    body: dict[str, Any] = r.json()
    assert body["status"] == status
    assert body["request_id"]
    if slug is not None:
        assert body["type"] == f"/problems/{slug}", body
    return body


async def new_vehicle(
    api: Api, t: TenantUsers, role: str = "admin", **overrides: Any
) -> dict[str, Any]:
    r = await api.client.post(
        "/api/v1/vehicles", json=vehicle_body(**overrides), headers=t.headers(role)
    )
    assert r.status_code == 201, r.text
    data: dict[str, Any] = r.json()
    return data


async def new_driver(
    api: Api, t: TenantUsers, role: str = "admin", **overrides: Any
) -> dict[str, Any]:
    r = await api.client.post(
        "/api/v1/drivers", json=driver_body(**overrides), headers=t.headers(role)
    )
    assert r.status_code == 201, r.text
    data: dict[str, Any] = r.json()
    return data


async def audit_events(
    api: Api, t: TenantUsers, entity_type: str, entity_id: str | uuid.UUID, role: str = "admin"
) -> list[dict[str, Any]]:
    """The entity's audit events, oldest first."""
    r = await api.client.get(
        "/api/v1/audit-events",
        params={
            "entity_type": entity_type,
            "entity_id": str(entity_id),
            "sort": "occurred_at",
            "limit": 500,
        },
        headers=t.headers(role),
    )
    assert r.status_code == 200, r.text
    events: list[dict[str, Any]] = r.json()["data"]
    return events


async def audit_actions(
    api: Api, t: TenantUsers, entity_type: str, entity_id: str | uuid.UUID
) -> list[str]:
    return [e["action"] for e in await audit_events(api, t, entity_type, entity_id)]
