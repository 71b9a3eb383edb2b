from __future__ import annotations

import uuid
from datetime import date, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    Float,
    ForeignKey,
    Index,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from ctafleet.db.base import Base, IdMixin, TenantMixin, TimestampMixin, VersionedMixin


class Vehicle(IdMixin, TimestampMixin, VersionedMixin, TenantMixin, Base):
    __tablename__ = "vehicles"
    __table_args__ = (
        UniqueConstraint("tenant_id", "vin"),
        UniqueConstraint("tenant_id", "plate", "plate_jurisdiction"),
        Index("ix_vehicles_tenant_status", "tenant_id", "status"),
    )

    unit_number: Mapped[str] = mapped_column(String(32))
    vin: Mapped[str] = mapped_column(String(32))
    vin_nonstandard: Mapped[bool] = mapped_column(Boolean, default=False)
    plate: Mapped[str] = mapped_column(String(16))
    plate_jurisdiction: Mapped[str] = mapped_column(String(16))
    make: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(64))
    year: Mapped[int]
    vehicle_type: Mapped[str] = mapped_column(String(32))
    department: Mapped[str] = mapped_column(String(100), default="")
    status: Mapped[str] = mapped_column(String(32), default="active")
    odometer_m: Mapped[int] = mapped_column(BigInteger, default=0)
    engine_hours_s: Mapped[int] = mapped_column(BigInteger, default=0)
    fuel_type: Mapped[str] = mapped_column(String(16))
    tank_capacity_l: Mapped[float | None] = mapped_column(Float, default=None)
    purchase_date: Mapped[date | None] = mapped_column(Date, default=None)
    purchase_cost_minor: Mapped[int | None] = mapped_column(BigInteger, default=None)
    purchase_currency: Mapped[str | None] = mapped_column(String(3), default=None)
    home_name: Mapped[str] = mapped_column(String(200), default="")
    home_lat: Mapped[float | None] = mapped_column(Float, default=None)
    home_lon: Mapped[float | None] = mapped_column(Float, default=None)
    notes: Mapped[str] = mapped_column(Text, default="")


class Driver(IdMixin, TimestampMixin, VersionedMixin, TenantMixin, Base):
    __tablename__ = "drivers"
    __table_args__ = (UniqueConstraint("tenant_id", "employee_number"),)

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


class Assignment(IdMixin, TimestampMixin, VersionedMixin, TenantMixin, Base):
    """A driver on a vehicle from `starts_at` to `ends_at` (open when null); no overlaps."""

    __tablename__ = "assignments"
    __table_args__ = (
        Index("ix_assignments_vehicle_time", "vehicle_id", "starts_at"),
        Index("ix_assignments_driver_time", "driver_id", "starts_at"),
    )

    vehicle_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("vehicles.id", ondelete="CASCADE"))
    driver_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("drivers.id", ondelete="CASCADE"))
    starts_at: Mapped[datetime]
    ends_at: Mapped[datetime | None] = mapped_column(default=None)
    notes: Mapped[str] = mapped_column(Text, default="")


class Device(IdMixin, TimestampMixin, VersionedMixin, TenantMixin, Base):
    """A telematics unit or phone app; authenticates its positions with its own credential."""

    __tablename__ = "devices"

    # The identifier the device sends (IMEI, OsmAnd id): unique platform-wide, since a position
    # arrives before its tenant is known.
    unique_id: Mapped[str] = mapped_column(String(64), unique=True)
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
