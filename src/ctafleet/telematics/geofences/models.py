from __future__ import annotations

from typing import Any

from sqlalchemy import Boolean, Float, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from ctafleet.db.base import Base, IdMixin, TenantMixin, TimestampMixin, VersionedMixin
from ctafleet.telematics.models import Attributes


class GeofenceRow(IdMixin, TimestampMixin, VersionedMixin, TenantMixin, Base):
    """A tenant's geofence. `geometry` is GeoJSON (lon, lat): a Polygon, or for a circle its
    centre as a Point with `radius_m`."""

    __tablename__ = "geofences"
    __table_args__ = (
        UniqueConstraint("tenant_id", "name"),
        Index("ix_geofences_tenant_updated_at", "tenant_id", "updated_at"),
        Index("ix_geofences_tenant_created_at", "tenant_id", "created_at"),
    )

    name: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(8))  # polygon | circle
    geometry: Mapped[dict[str, Any]] = mapped_column(Attributes)
    radius_m: Mapped[float | None] = mapped_column(Float, default=None)
    speed_limit_mps: Mapped[float | None] = mapped_column(Float, default=None)
    # {"timezone": ..., "windows": [...]} (derive.geofences.Schedule); None: always active.
    schedule: Mapped[dict[str, Any] | None] = mapped_column(Attributes, default=None)
    dwell_s: Mapped[float | None] = mapped_column(Float, default=None)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
