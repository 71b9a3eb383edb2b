from __future__ import annotations

import uuid
from datetime import date

from sqlalchemy import Date, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from ctafleet.db.base import (
    Base,
    IdMixin,
    TenantMixin,
    TimestampMixin,
    VersionedMixin,
    sort_indexes,
)


class Driver(IdMixin, TimestampMixin, VersionedMixin, TenantMixin, Base):
    __tablename__ = "drivers"
    __table_args__ = (
        UniqueConstraint("tenant_id", "employee_number"),
        *sort_indexes(
            "drivers", "last_name", "first_name", "licence_expiry", "status", "created_at"
        ),
    )

    first_name: Mapped[str] = mapped_column(String(100))
    last_name: Mapped[str] = mapped_column(String(100))
    employee_number: Mapped[str] = mapped_column(String(32))
    licence_number: Mapped[str] = mapped_column(String(32))
    licence_class: Mapped[str] = mapped_column(String(16))
    licence_jurisdiction: Mapped[str] = mapped_column(String(16))
    licence_expiry: Mapped[date] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(16), default="active")
    email: Mapped[str | None] = mapped_column(String(320), default=None)
    phone: Mapped[str | None] = mapped_column(String(32), default=None)
    user_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), unique=True, default=None
    )
