from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, Index, Text
from sqlalchemy.orm import Mapped, mapped_column

from ctafleet.db.base import (
    Base,
    IdMixin,
    TenantMixin,
    TimestampMixin,
    VersionedMixin,
    sort_indexes,
)


class Assignment(IdMixin, TimestampMixin, VersionedMixin, TenantMixin, Base):
    """A driver on a vehicle from `starts_at` to `ends_at` (open when null); no overlaps."""

    __tablename__ = "assignments"
    __table_args__ = (
        Index("ix_assignments_vehicle_time", "vehicle_id", "starts_at"),
        Index("ix_assignments_driver_time", "driver_id", "starts_at"),
        *sort_indexes("assignments", "starts_at", "created_at"),
    )

    vehicle_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("vehicles.id", ondelete="CASCADE"))
    driver_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("drivers.id", ondelete="CASCADE"))
    starts_at: Mapped[datetime]
    ends_at: Mapped[datetime | None] = mapped_column(default=None)
    notes: Mapped[str] = mapped_column(Text, default="")
