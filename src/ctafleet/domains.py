"""Every domain in one place: its tables (migrations and the drift check need them all), its
API routers and its business gauges. Adding a domain means one entry in each list here.

Only the top of the house imports this module (the app, the CLI, the migration environment):
the layers below learn about domains through what is handed to them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime

from fastapi import APIRouter
from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import AsyncSession

from ctafleet.audit.routes import router as audit_router

# Tables: importing a models module registers its tables on the shared metadata.
from ctafleet.auth import models as _auth_models  # noqa: F401
from ctafleet.auth.routes import router as auth_router
from ctafleet.auth.routes import users_router
from ctafleet.auth.sso import models as _sso_models  # noqa: F401
from ctafleet.auth.sso.routes import config_router as sso_config_router
from ctafleet.auth.sso.routes import router as sso_router
from ctafleet.db import audit as _audit_models  # noqa: F401
from ctafleet.db.base import Base
from ctafleet.fleet.assignments import models as _assignment_models  # noqa: F401
from ctafleet.fleet.assignments.routes import router as assignments_router
from ctafleet.fleet.drivers import models as _driver_models  # noqa: F401
from ctafleet.fleet.drivers.routes import router as drivers_router
from ctafleet.fleet.vehicles import metrics as vehicle_metrics
from ctafleet.fleet.vehicles import models as _vehicle_models  # noqa: F401
from ctafleet.fleet.vehicles.routes import router as vehicles_router
from ctafleet.telematics import metrics as telematics_metrics
from ctafleet.telematics import models as _telematics_models  # noqa: F401
from ctafleet.telematics.geofences import models as _geofence_models  # noqa: F401
from ctafleet.telematics.geofences.routes import router as geofences_router
from ctafleet.telematics.history.routes import router as history_router
from ctafleet.telematics.routes import router as devices_router
from ctafleet.telematics.routes import telemetry_router
from ctafleet.tenants import models as _tenant_models  # noqa: F401
from ctafleet.tenants.routes import router as tenant_router

# Routers under /api/v1, most requested first (routes are matched in order).
API_ROUTERS: tuple[APIRouter, ...] = (
    vehicles_router,
    drivers_router,
    assignments_router,
    devices_router,
    telemetry_router,
    geofences_router,
    history_router,
    auth_router,
    sso_router,
    users_router,
    tenant_router,
    sso_config_router,
    audit_router,
)

# Business gauges, refreshed when /metrics is scraped: each reads across tenants through the
# system session it is handed and sets its gauges.
GaugeRefresher = Callable[[AsyncSession, datetime], Awaitable[None]]
GAUGES: tuple[GaugeRefresher, ...] = (
    vehicle_metrics.refresh_gauges,
    telematics_metrics.refresh_gauges,
)


def metadata() -> MetaData:
    """The metadata with every domain's tables."""
    return Base.metadata
