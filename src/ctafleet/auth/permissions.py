"""Roles and the permission matrix. docs/permissions.md is generated from this module."""

from __future__ import annotations

from enum import StrEnum

from ctafleet.kernel.roles import Role


class Permission(StrEnum):
    # Declarations for routes that need no role: every route names one of these or a real one.
    public = "public"
    authenticated = "authenticated"

    tenant_read = "tenant:read"
    tenant_manage = "tenant:manage"
    users_read = "users:read"
    users_manage = "users:manage"
    audit_read = "audit:read"
    audit_read_fleet = "audit:read-fleet"
    vehicles_read = "vehicles:read"
    vehicles_write = "vehicles:write"
    vehicles_meters = "vehicles:meters"
    drivers_read = "drivers:read"
    drivers_write = "drivers:write"
    assignments_read = "assignments:read"
    assignments_write = "assignments:write"
    devices_read = "devices:read"
    devices_manage = "devices:manage"
    telemetry_read = "telemetry:read"
    telemetry_write = "telemetry:write"
    telemetry_manage = "telemetry:manage"
    geofences_manage = "geofences:manage"


DESCRIPTIONS: dict[Permission, str] = {
    Permission.public: "No login needed (login, token refresh, health).",
    Permission.authenticated: "Any logged-in user (own profile, logout, MFA enrolment).",
    Permission.tenant_read: "Read the organisation's settings.",
    Permission.tenant_manage: "Change the organisation's settings (units, time zone, MFA policy).",
    Permission.users_read: "List and read users.",
    Permission.users_manage: "Create users, change roles, deactivate, reset MFA.",
    Permission.audit_read: "Read the audit log.",
    Permission.audit_read_fleet: "Read the audit log of fleet objects (vehicles, drivers, "
    "assignments, devices, meter readings), not of users, sessions or settings.",
    Permission.vehicles_read: "List and read vehicles.",
    Permission.vehicles_write: "Create, update and retire vehicles, correct meters.",
    Permission.vehicles_meters: "Record odometer and engine-hour readings.",
    Permission.drivers_read: "List and read drivers.",
    Permission.drivers_write: "Create and update drivers.",
    Permission.assignments_read: "List and read driver-vehicle assignments.",
    Permission.assignments_write: "Create, end and delete assignments.",
    Permission.devices_read: "List and read telematics devices.",
    Permission.devices_manage: "Register devices, bind them to vehicles, rotate credentials.",
    Permission.telemetry_read: "Read positions, tracks and the live fleet map.",
    Permission.telemetry_write: "Send positions on behalf of the tenant's devices (JSON batch "
    "API; devices themselves use their own credential).",
    Permission.telemetry_manage: "Set how long positions are kept and the tenant ingest key of "
    "id-only trackers.",
    Permission.geofences_manage: "Create, change and delete geofences (reading them needs "
    "telemetry:read).",
}

_READ_FLEET = {
    Permission.tenant_read,
    Permission.vehicles_read,
    Permission.drivers_read,
    Permission.assignments_read,
    Permission.devices_read,
    Permission.telemetry_read,
}
_ALL = {p for p in Permission if p not in (Permission.public, Permission.authenticated)}

MATRIX: dict[Role, frozenset[Permission]] = {
    Role.admin: frozenset(_ALL),
    Role.fleet_manager: frozenset(
        _READ_FLEET
        | {
            Permission.users_read,
            Permission.vehicles_write,
            Permission.vehicles_meters,
            Permission.drivers_write,
            Permission.assignments_write,
            Permission.devices_manage,
            Permission.telemetry_write,
            Permission.geofences_manage,
            Permission.audit_read_fleet,
        }
    ),
    Role.dispatcher: frozenset(_READ_FLEET | {Permission.assignments_write}),
    Role.mechanic: frozenset(
        {
            Permission.tenant_read,
            Permission.vehicles_read,
            Permission.vehicles_meters,
            Permission.devices_read,
            Permission.telemetry_read,
        }
    ),
    Role.driver: frozenset(
        {
            Permission.tenant_read,
            Permission.vehicles_read,
            Permission.vehicles_meters,
            Permission.drivers_read,
            Permission.assignments_read,
        }
    ),
    Role.viewer: frozenset(_READ_FLEET),
    Role.auditor: frozenset(
        _READ_FLEET | {Permission.users_read, Permission.audit_read, Permission.audit_read_fleet}
    ),
}

# Roles whose reads are limited to their own records (the driver linked to the user).
OWN_RECORDS_ONLY: frozenset[Role] = frozenset({Role.driver})

ROLE_DESCRIPTIONS: dict[Role, str] = {
    Role.admin: "Everything in the organisation, including users, settings and the audit log.",
    Role.fleet_manager: "Runs the fleet: vehicles, drivers, assignments, devices.",
    Role.dispatcher: "Reads the fleet and assigns drivers to vehicles.",
    Role.mechanic: "Reads vehicles and records meter readings.",
    Role.driver: "Sees only their own driver record, assigned vehicles and assignments.",
    Role.viewer: "Reads the fleet.",
    Role.auditor: "Reads everything, including users and the audit log; changes nothing.",
}


def allowed(role: str, permission: Permission) -> bool:
    if permission in (Permission.public, Permission.authenticated):
        return True
    try:
        return permission in MATRIX[Role(role)]
    except ValueError:
        return False


def render_markdown() -> str:
    roles = list(Role)
    out = [
        "# Roles and permissions",
        "",
        "Generated from `src/ctafleet/auth/permissions.py` by `ctafleet permissions docs`; do not "
        "edit by hand. Every API route declares exactly one permission (a test walks the routes "
        "and fails on one that declares none). Objects of another organisation are always "
        "`404 Not Found`.",
        "",
        "## Roles",
        "",
    ]
    out += [f"- `{r.value}`: {ROLE_DESCRIPTIONS[r]}" for r in roles]
    out += ["", "## Matrix", ""]
    out.append("| permission | " + " | ".join(r.value for r in roles) + " | meaning |")
    out.append("|---|" + "---|" * len(roles) + "---|")
    for p in Permission:
        if p in (Permission.public, Permission.authenticated):
            continue
        marks = " | ".join("yes" if p in MATRIX[r] else "" for r in roles)
        out.append(f"| `{p.value}` | {marks} | {DESCRIPTIONS[p]} |")
    out += [
        "",
        "Routes that need no role declare `public` or `authenticated`:",
        "",
        f"- `public`: {DESCRIPTIONS[Permission.public]}",
        f"- `authenticated`: {DESCRIPTIONS[Permission.authenticated]}",
        "",
        "Drivers (`driver`) see only their own records: the driver linked to their user, the "
        "vehicles assigned to that driver now, and that driver's assignments. Any other object "
        "is `404`.",
        "",
    ]
    return "\n".join(out)
