"""Imports every domain's tables so the metadata (migrations, drift check) is complete."""

from ctafleet.audit.models import AuditEvent
from ctafleet.auth.models import AuthSession, RecoveryCode, RefreshToken, User
from ctafleet.db.base import Base
from ctafleet.fleet.models import Assignment, Device, Driver, Vehicle
from ctafleet.tenants.models import Tenant

__all__ = [
    "Assignment",
    "AuditEvent",
    "AuthSession",
    "Base",
    "Device",
    "Driver",
    "RecoveryCode",
    "RefreshToken",
    "Tenant",
    "User",
    "Vehicle",
]
