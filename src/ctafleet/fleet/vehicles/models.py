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

from ctafleet.db.base import (
    Base,
    IdMixin,
    TenantMixin,
    TimestampMixin,
    VersionedMixin,
    sort_indexes,
    utcnow,
)


class Vehicle(IdMixin, TimestampMixin, VersionedMixin, TenantMixin, Base):
    __tablename__ = "vehicles"
    __table_args__ = (
        UniqueConstraint("tenant_id", "vin"),
        UniqueConstraint("tenant_id", "plate", "plate_jurisdiction"),
        Index("ix_vehicles_tenant_status", "tenant_id", "status"),
        *sort_indexes(
            "vehicles",
            "unit_number",
            "make",
            "model",
            "year",
            "vehicle_type",
            "department",
            "fuel_type",
            "odometer_m",
            "engine_hours_s",
            "created_at",
            "updated_at",
        ),
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


class MeterReading(IdMixin, TenantMixin, Base):
    """One odometer and/or engine-hour reading of a vehicle, kept with its time and source.

    The vehicle's `odometer_m`/`engine_hours_s` are the latest accepted values; this is their
    history. A correction is a reading of its own that names the reading it corrects.
    """

    __tablename__ = "meter_readings"
    __table_args__ = (Index("ix_meter_readings_vehicle_time", "vehicle_id", "read_at"),)

    vehicle_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("vehicles.id", ondelete="CASCADE"))
    read_at: Mapped[datetime]
    odometer_m: Mapped[int | None] = mapped_column(BigInteger, default=None)
    engine_hours_s: Mapped[int | None] = mapped_column(BigInteger, default=None)
    # manual, device, fuel, work_order (who produced the value); correction (a fix by hand)
    source: Mapped[str] = mapped_column(String(16))
    corrects_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("meter_readings.id", ondelete="SET NULL"), default=None
    )
    note: Mapped[str] = mapped_column(Text, default="")
    recorded_by: Mapped[uuid.UUID | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
