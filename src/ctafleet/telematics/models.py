from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from ctafleet.db.base import (
    Base,
    IdMixin,
    TenantMixin,
    TimestampMixin,
    VersionedMixin,
    sort_indexes,
)


class Device(IdMixin, TimestampMixin, VersionedMixin, TenantMixin, Base):
    """A telematics unit or phone app; authenticates its positions with its own credential."""

    __tablename__ = "devices"
    __table_args__ = (
        UniqueConstraint("tenant_id", "unique_id"),
        *sort_indexes("devices", "name", "created_at"),
    )

    # The identifier the device sends (IMEI, OsmAnd id): unique within the tenant. Ingest finds
    # the device by its credential, which is unique platform-wide.
    unique_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(100), default="")
    protocol: Mapped[str] = mapped_column(String(16), default="osmand")
    vehicle_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("vehicles.id", ondelete="SET NULL"), index=True, default=None
    )
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    credential_hash: Mapped[str] = mapped_column(String(64), unique=True)
    credential_prefix: Mapped[str] = mapped_column(String(12))
    credential_rotated_at: Mapped[datetime]
    last_seen_at: Mapped[datetime | None] = mapped_column(default=None)
