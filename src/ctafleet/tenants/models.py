from __future__ import annotations

from sqlalchemy import JSON, String
from sqlalchemy.orm import Mapped, mapped_column

from ctafleet.db.base import Base, IdMixin, TimestampMixin, VersionedMixin


class Tenant(IdMixin, TimestampMixin, VersionedMixin, Base):
    """An organisation. Its id is the tenant scope of every row it owns."""

    __tablename__ = "tenants"

    slug: Mapped[str] = mapped_column(String(63), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    display_units: Mapped[str] = mapped_column(String(16), default="metric")
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    currency: Mapped[str] = mapped_column(String(3), default="USD")
    mfa_required_roles: Mapped[list[str]] = mapped_column(JSON, default=list)
