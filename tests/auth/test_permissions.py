"""Roles and permissions: the matrix as the API enforces it, every route declaring a permission,
and docs/permissions.md kept in step with the code."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi import APIRouter, Depends, FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts

from ctafleet.app import create_app
from ctafleet.auth.deps import public, require
from ctafleet.auth.permissions import MATRIX, Permission, allowed, render_markdown
from ctafleet.kernel.roles import Role
from tests.auth.helpers import CachedLogin, bearer
from tests.kit.app import Api, TenantUsers
from tests.kit.problems import assert_unauthorized

ROOT = Path(__file__).resolve().parents[2]

# --- walking the routes ------------------------------------------------------------------


@dataclass(frozen=True)
class Declared:
    path: str
    methods: frozenset[str]
    permissions: tuple[Permission, ...]


def _permissions(dependant: Dependant) -> Iterator[Permission]:
    for sub in dependant.dependencies:
        permission = getattr(sub.call, "__permission__", None)
        if permission is not None:
            yield permission
        yield from _permissions(sub)


def declared_routes(app: FastAPI) -> tuple[list[Declared], list[str]]:
    """Every API route with the permissions its dependencies declare; plus the paths of plain
    (non-API) HTTP routes, which cannot declare one."""
    api_routes: list[Declared] = []
    plain: list[str] = []
    for ctx in iter_route_contexts(app.routes):
        if not ctx.methods or ctx.path is None:
            continue  # mounts: static files
        if not isinstance(ctx.original_route, APIRoute):
            plain.append(ctx.path)
            continue
        # The effective dependant includes dependencies added where the router is included.
        dependant = getattr(ctx, "dependant", None) or ctx.original_route.dependant
        permissions = tuple(_permissions(dependant))
        # A dependency-free route declares itself (public_endpoint).
        endpoint = getattr(ctx.original_route.endpoint, "__permission__", None)
        if endpoint is not None:
            permissions += (endpoint,)
        api_routes.append(Declared(ctx.path, frozenset(ctx.methods), permissions))
    return api_routes, plain


def test_the_walk_sees_undeclared_routes_and_router_level_declarations() -> None:
    # The route walk below passes only if it can fail: a route without a declaration shows up.
    router = APIRouter(prefix="/inner")

    @router.get("/guarded")
    def guarded(_: Any = Depends(require(Permission.users_read))) -> None: ...

    @router.get("/naked")
    def naked() -> None: ...

    nested = APIRouter(prefix="/outer", dependencies=[Depends(public())])

    @nested.get("/via-router")
    def via_router() -> None: ...

    app = FastAPI()
    app.include_router(router, prefix="/v1")
    app.include_router(nested)
    routes, _ = declared_routes(app)

    by_path = {r.path: r.permissions for r in routes}
    assert by_path == {
        "/v1/inner/guarded": (Permission.users_read,),
        "/v1/inner/naked": (),
        "/outer/via-router": (Permission.public,),
    }


async def test_every_route_declares_exactly_one_permission(api: Api) -> None:
    app = create_app(api.settings, clock=api.clock)
    try:
        routes, plain = declared_routes(app)
    finally:
        await app.state.ctafleet.db.dispose()

    paths = {r.path for r in routes}
    # The walk must reach the routers included under /api/v1 and the bare ones alike.
    assert {"/api/v1/auth/login", "/api/v1/users/{user_id}", "/api/v1/vehicles"} <= paths
    assert {"/", "/api/docs", "/healthz", "/readyz", "/api/health"} <= paths
    undeclared = sorted(f"{sorted(r.methods)} {r.path}" for r in routes if not r.permissions)
    assert undeclared == [], f"routes without require()/public(): {undeclared}"
    several = sorted(f"{r.path}: {r.permissions}" for r in routes if len(r.permissions) > 1)
    assert several == [], f"routes declaring more than one permission: {several}"
    # The only plain route is FastAPI's own schema; anything else bypasses the declaration.
    assert plain == ["/api/openapi.json"]
    public = {r.path for r in routes if r.permissions == (Permission.public,)}
    assert {"/", "/api/docs", "/healthz", "/readyz", "/api/health"} <= public
    # Of the data API, only the ways to obtain a token are open to anonymous callers
    # (a password login, a refresh, a single sign-on's start and the provider's redirect back).
    assert {p for p in public if p.startswith("/api/v1/")} == {
        "/api/v1/auth/login",
        "/api/v1/auth/refresh",
        "/api/v1/auth/oidc/{tenant_slug}/login",
        "/api/v1/auth/oidc/callback",
    }


async def test_every_non_public_route_refuses_anonymous_requests(api: Api) -> None:
    routes, _ = declared_routes(api.app)
    checked = 0
    for route in routes:
        if route.permissions == (Permission.public,):
            continue
        path = re.sub(r"\{[^}]+\}", lambda _: str(uuid.uuid4()), route.path)
        for method in route.methods:
            r = await api.client.request(method, path, json={})
            assert_unauthorized(r)
            checked += 1
    assert checked >= 25


# --- the matrix as the API enforces it ---------------------------------------------------


@dataclass(frozen=True)
class Probe:
    """A request that needs exactly one permission, and what an allowed caller gets: a read
    of the list, or a change to an object that does not exist (nothing is modified)."""

    method: str
    path: str
    ok_status: int
    body: dict[str, Any] | None = None


def _missing() -> str:
    return str(uuid.uuid4())


PROBES: dict[Permission, Probe] = {
    Permission.authenticated: Probe("GET", "/api/v1/auth/me", 200),
    Permission.tenant_read: Probe("GET", "/api/v1/tenant", 200),
    Permission.tenant_manage: Probe("PATCH", "/api/v1/tenant", 200, {}),
    Permission.users_read: Probe("GET", "/api/v1/users", 200),
    Permission.users_manage: Probe("PATCH", f"/api/v1/users/{_missing()}", 404, {}),
    Permission.audit_read_fleet: Probe("GET", "/api/v1/audit-events", 200),
    Permission.vehicles_read: Probe("GET", "/api/v1/vehicles", 200),
    Permission.vehicles_write: Probe("PATCH", f"/api/v1/vehicles/{_missing()}", 404, {}),
    Permission.vehicles_meters: Probe(
        "POST", f"/api/v1/vehicles/{_missing()}/meters", 404, {"odometer_m": 1}
    ),
    Permission.drivers_read: Probe("GET", "/api/v1/drivers", 200),
    Permission.drivers_write: Probe("PATCH", f"/api/v1/drivers/{_missing()}", 404, {}),
    Permission.assignments_read: Probe("GET", "/api/v1/assignments", 200),
    Permission.assignments_write: Probe("DELETE", f"/api/v1/assignments/{_missing()}", 404),
    Permission.devices_read: Probe("GET", "/api/v1/devices", 200),
    Permission.devices_manage: Probe(
        "POST", f"/api/v1/devices/{_missing()}/rotate-credential", 404
    ),
    Permission.telemetry_read: Probe("GET", "/api/v1/telemetry/snapshot", 200),
    Permission.telemetry_write: Probe("POST", "/api/v1/telemetry", 202, {"points": []}),
    Permission.telemetry_manage: Probe(
        "PATCH", "/api/v1/telemetry/policy", 200, {"retention_days": 30}
    ),
    Permission.geofences_manage: Probe("DELETE", f"/api/v1/geofences/{_missing()}", 404),
}


# Permissions that widen what a route answers rather than open it: `audit:read` lets the
# audit-log route (which needs audit:read-fleet) show more than the fleet's events
# (tests/audit/test_audit.py::test_fleet_managers_read_the_fleets_audit_only).
WIDENING = {Permission.audit_read}


def test_probes_cover_every_permission_through_a_route_that_declares_it(api: Api) -> None:
    assert set(PROBES) == set(Permission) - {Permission.public} - WIDENING
    routes, _ = declared_routes(api.app)
    for permission, probe in PROBES.items():
        matching = [r for r in routes if probe.method in r.methods and _matches(r.path, probe.path)]
        assert len(matching) == 1, (permission, probe)
        assert matching[0].permissions == (permission,), (permission, probe, matching[0])


def _matches(template: str, path: str) -> bool:
    left, right = template.split("/"), path.split("/")
    return len(left) == len(right) and all(
        a == b or (a.startswith("{") and a.endswith("}")) for a, b in zip(left, right, strict=True)
    )


@pytest.fixture(scope="module")
async def every_role(session_api: Api) -> TenantUsers:
    return await session_api.tenant(login=False)


@pytest.fixture(scope="module")
def logins(every_role: TenantUsers) -> dict[str, CachedLogin]:
    return {role: CachedLogin(user.email) for role, user in every_role.users.items()}


@pytest.mark.parametrize("role", list(Role))
async def test_api_enforces_the_matrix(
    api: Api, logins: dict[str, CachedLogin], role: Role
) -> None:
    token = await logins[role.value].token(api)
    wrong = []
    for permission, probe in PROBES.items():
        r = await api.client.request(
            probe.method, probe.path, headers=bearer(token), json=probe.body
        )
        may = permission is Permission.authenticated or permission in MATRIX[role]
        expected = probe.ok_status if may else 403
        if r.status_code != expected:
            wrong.append(f"{permission.value}: expected {expected}, got {r.status_code} {r.text}")
        if expected == 403 and r.status_code == 403:
            assert r.json()["type"] == "/problems/forbidden"
    assert wrong == [], f"{role.value}: " + "; ".join(wrong)


def test_allowed_follows_the_matrix() -> None:
    assert set(MATRIX) == set(Role)
    for role in Role:
        for permission in Permission:
            declared = permission in (Permission.public, Permission.authenticated)
            assert allowed(role.value, permission) == (declared or permission in MATRIX[role])
    assert not allowed("superuser", Permission.vehicles_read)
    assert allowed("superuser", Permission.authenticated)
    # Nobody but the admin manages users or the organisation.
    managers = {r for r in Role if Permission.users_manage in MATRIX[r]}
    assert managers == {Role.admin}


# --- the generated documentation ---------------------------------------------------------


def test_permissions_doc_is_generated_from_the_matrix() -> None:
    doc = ROOT / "docs" / "permissions.md"
    assert doc.exists(), "docs/permissions.md is missing: run `ctafleet permissions docs`"
    assert doc.read_text() == render_markdown(), (
        "docs/permissions.md is out of date: run `ctafleet permissions docs`"
    )


def test_rendered_matrix_marks_exactly_the_allowed_cells() -> None:
    rows = {
        line.split("|")[1].strip().strip("`"): [c.strip() for c in line.split("|")[2:-2]]
        for line in render_markdown().splitlines()
        if line.startswith("| `")
    }
    assert set(rows) == {p.value for p in Permission} - {"public", "authenticated"}
    for value, cells in rows.items():
        permission = Permission(value)
        assert cells == ["yes" if permission in MATRIX[r] else "" for r in Role], value
