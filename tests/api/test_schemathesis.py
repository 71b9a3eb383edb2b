"""Property-based run of every documented operation: no 5xx, every answer matches the schema.

A fresh app on the test database serves the run (schemathesis drives it from its own event loop);
it logs in as the admin of a tenant of its own. Operations that end the session or change the
credentials are left out, or the rest of the run would only see 401s.
"""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path
from typing import Any

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from ctafleet.app import create_app
from tests.kit.app import Api, TenantUsers
from tests.kit.factories import driver_body, geofence_body, vehicle_body

PARAM = re.compile(r"{([^}]+)}")

# Per operation. CTAFLEET_FUZZ_EXAMPLES raises it for a longer local run.
MAX_EXAMPLES = int(os.environ.get("CTAFLEET_FUZZ_EXAMPLES", "12"))
EXCLUDED = [
    ("POST", "/api/v1/auth/logout"),  # ends the session
    ("POST", "/api/v1/auth/password"),  # credential change (ends other sessions)
    ("POST", "/api/v1/auth/mfa/verify"),  # enrolment ends every session
    # Fetches the identity provider the body names: generated issuers must not send the
    # server to whatever host they spell (tests/auth/sso covers its bad input).
    ("PUT", "/api/v1/tenant/sso"),
]
CHECKS = [
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
    content_type_conformance,
]


def _run_operation(
    operation: Any,
    headers: dict[str, str],
    seen: set[int],
    path_parameters: dict[str, str] | None = None,
) -> None:
    @given(case=operation.as_strategy(path_parameters=path_parameters))
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        response = case.call_and_validate(headers=headers, checks=CHECKS)
        seen.add(response.status_code)

    run()


async def _objects(api: Api, tenant: TenantUsers) -> dict[str, str]:
    """Real objects, so id-bearing operations also run against something that exists."""
    h = tenant.headers()
    vehicle = (await api.client.post("/api/v1/vehicles", json=vehicle_body(), headers=h)).json()
    driver = (await api.client.post("/api/v1/drivers", json=driver_body(), headers=h)).json()
    assignment = await api.client.post(
        "/api/v1/assignments",
        json={
            "vehicle_id": vehicle["id"],
            "driver_id": driver["id"],
            "starts_at": "2025-01-01T00:00:00Z",
        },
        headers=h,
    )
    device = await api.client.post(
        "/api/v1/devices",
        json={"unique_id": f"fuzz-{uuid.uuid4().hex[:12]}", "name": "fuzz", "protocol": "json"},
        headers=h,
    )
    geofence = await api.client.post("/api/v1/geofences", json=geofence_body(), headers=h)
    return {
        "geofence_id": geofence.json()["id"],
        "vehicle_id": vehicle["id"],
        "driver_id": driver["id"],
        "assignment_id": assignment.json()["id"],
        "device_id": device.json()["id"],
        # Not the admin: resetting its MFA or role would end the session the run uses.
        "user_id": str(tenant.users["viewer"].id),
        "tenant_slug": tenant.slug,  # single sign-on's start (not configured: 404)
    }


async def test_openapi_operations(api: Api, tmp_path: Path) -> None:
    tenant = await api.tenant(roles=["admin", "viewer"])
    headers = tenant.headers()
    ids = await _objects(api, tenant)
    app = create_app(api.settings, clock=api.clock)
    schema: Any = schemathesis.openapi.from_asgi("/api/openapi.json", app)
    for method, path in EXCLUDED:
        schema = schema.exclude(method=method, path=path)

    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 25, [op.label for op in operations]
    failures = []
    statuses: dict[str, set[int]] = {}
    for operation in operations:
        seen = statuses.setdefault(operation.label, set())
        params = PARAM.findall(operation.path)
        try:
            _run_operation(operation, headers, seen)
            if params:
                _run_operation(operation, headers, seen, {p: ids[p] for p in params})
        except (Exception, BaseExceptionGroup) as exc:  # every broken operation in one run
            failures.append(f"{operation.label}: {str(exc)[:700]}")
    assert not failures, "\n\n".join(failures)
    print({k: sorted(v) for k, v in statuses.items()})

    # The token still works: the run exercised authenticated routes throughout.
    r = await api.client.get("/api/v1/auth/me", headers=headers)
    assert r.status_code == 200, r.text
