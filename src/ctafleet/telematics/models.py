from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
    true,
)
from sqlalchemy.dialects.postgresql import JSONB
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
from ctafleet.telematics.derive.rules import tenant_rules

# Attributes are stored as JSONB on PostgreSQL (compact, queryable), JSON text elsewhere.
Attributes = JSON().with_variant(JSONB(), "postgresql")


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
    # A legacy tracker that cannot carry a credential may send by its id alone, through the
    # tenant's ingest key (see TelemetrySettings); off unless set per device.
    allow_id_only: Mapped[bool] = mapped_column(Boolean, default=False)
    # Whether its distance and ignition time move the vehicle's meters: one device per vehicle
    # does (a tracker and a driver's phone in one vehicle would otherwise count twice).
    feeds_meters: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    last_seen_at: Mapped[datetime | None] = mapped_column(default=None)


class TelemetrySettings(VersionedMixin, TenantMixin, Base):
    """A tenant's telemetry policy: how long positions are kept, and its ingest key for
    id-only devices (none until the tenant creates one)."""

    __tablename__ = "telemetry_settings"

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    retention_days: Mapped[int] = mapped_column(Integer, default=365)
    ingest_key_hash: Mapped[str | None] = mapped_column(String(64), unique=True, default=None)
    ingest_key_prefix: Mapped[str | None] = mapped_column(String(12), default=None)
    # The tenant's own derivation thresholds (`Rules` field -> value); None: the defaults.
    rules: Mapped[dict[str, Any] | None] = mapped_column(Attributes, default=None)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    @property
    def effective_rules(self) -> dict[str, Any]:
        """The tunable thresholds in effect: the tenant's, else the defaults."""
        return tenant_rules(self.rules).tunable()

    @property
    def id(self) -> uuid.UUID:
        """One row per tenant: the tenant's id names it (in the audit trail)."""
        return self.tenant_id


class Position(TenantMixin, Base):
    """One stored message of a device: the table every point lands in, by far the largest.

    Keyed by (device, fix time): a point delivered twice (a retry, a redelivery from the queue)
    is stored once. On PostgreSQL the table is range-partitioned by month of the fix time, so
    retention drops whole partitions. No foreign keys: each would be checked per row on the
    hot path, and devices are deactivated, never deleted.
    """

    __tablename__ = "positions"
    __table_args__ = (
        Index("ix_positions_vehicle_id_fix_time", "vehicle_id", "fix_time"),
        {"postgresql_partition_by": "RANGE (fix_time)"},
    )

    # Declared here without the mixin's foreign key and index (see the docstring); the device
    # index leads with the device, which belongs to one tenant.
    tenant_id: Mapped[uuid.UUID] = mapped_column()
    device_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    fix_time: Mapped[datetime] = mapped_column(primary_key=True)
    received_at: Mapped[datetime]
    vehicle_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    lat: Mapped[float | None] = mapped_column(Float(53), default=None)
    lon: Mapped[float | None] = mapped_column(Float(53), default=None)
    valid: Mapped[bool] = mapped_column(Boolean, default=True)
    server_time: Mapped[bool] = mapped_column(Boolean, default=False)
    speed_mps: Mapped[float | None] = mapped_column(Float, default=None)
    course_deg: Mapped[float | None] = mapped_column(Float, default=None)
    altitude_m: Mapped[float | None] = mapped_column(Float, default=None)
    accuracy_m: Mapped[float | None] = mapped_column(Float, default=None)
    hdop: Mapped[float | None] = mapped_column(Float, default=None)
    battery_pct: Mapped[float | None] = mapped_column(Float, default=None)
    charging: Mapped[bool | None] = mapped_column(Boolean, default=None)
    ignition: Mapped[bool | None] = mapped_column(Boolean, default=None)
    odometer_m: Mapped[float | None] = mapped_column(Float(53), default=None)
    driver_unique_id: Mapped[str | None] = mapped_column(String(64), default=None)
    attributes: Mapped[dict[str, Any] | None] = mapped_column(Attributes, default=None)


class LastPosition(TenantMixin, Base):
    """Each device's newest fix and its last contact of any kind."""

    __tablename__ = "last_positions"

    device_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True
    )
    vehicle_id: Mapped[uuid.UUID | None] = mapped_column(index=True, default=None)
    last_message_at: Mapped[datetime]
    fix_time: Mapped[datetime | None] = mapped_column(default=None)
    lat: Mapped[float | None] = mapped_column(Float(53), default=None)
    lon: Mapped[float | None] = mapped_column(Float(53), default=None)
    speed_mps: Mapped[float | None] = mapped_column(Float, default=None)
    course_deg: Mapped[float | None] = mapped_column(Float, default=None)
    altitude_m: Mapped[float | None] = mapped_column(Float, default=None)
    accuracy_m: Mapped[float | None] = mapped_column(Float, default=None)
    battery_pct: Mapped[float | None] = mapped_column(Float, default=None)
    ignition: Mapped[bool | None] = mapped_column(Boolean, default=None)
    # The vehicle's odometer as telemetry knows it (the device's own, else GPS distance).
    odometer_m: Mapped[float | None] = mapped_column(Float(53), default=None)
    # Unused since the derive state moved to device_states, and no longer written: the
    # release after this one drops it (a contract migration), once no running process of an
    # earlier release copies it.
    derive_state: Mapped[dict[str, Any] | None] = mapped_column(Attributes, default=None)
    updated_at: Mapped[datetime]


# --- derived data (ctafleet.telematics.derived writes these from each committed batch) -----
# No foreign keys to devices or vehicles: rows are written on the ingest hot path, and devices
# are deactivated, never deleted. Every row carries its tenant (the batch spans tenants).


class DeviceDeriveState(TenantMixin, Base):
    """The derive engine's running state per device (`DeviceState` as JSON)."""

    __tablename__ = "device_states"

    device_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True
    )
    state: Mapped[dict[str, Any]] = mapped_column(Attributes)
    updated_at: Mapped[datetime]
    # Set by the offline sweep once it reported the device silent; cleared by its next point.
    offline_at: Mapped[datetime | None] = mapped_column(default=None)


class TripRow(IdMixin, TenantMixin, Base):
    """A trip the engine closed (see `derive.trips.Trip`)."""

    __tablename__ = "trips"
    __table_args__ = (
        UniqueConstraint("device_id", "start_time"),
        Index("ix_trips_vehicle_id_start_time", "vehicle_id", "start_time"),
        Index("ix_trips_device_id_checkpoint_at", "device_id", "checkpoint_at"),
    )

    device_id: Mapped[uuid.UUID] = mapped_column()
    vehicle_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    start_time: Mapped[datetime]
    end_time: Mapped[datetime]
    start_lat: Mapped[float] = mapped_column(Float(53))
    start_lon: Mapped[float] = mapped_column(Float(53))
    end_lat: Mapped[float] = mapped_column(Float(53))
    end_lon: Mapped[float] = mapped_column(Float(53))
    distance_m: Mapped[float] = mapped_column(Float(53))
    duration_s: Mapped[float] = mapped_column(Float(53))
    driving_s: Mapped[float] = mapped_column(Float(53))
    idle_s: Mapped[float] = mapped_column(Float(53))
    max_speed_mps: Mapped[float] = mapped_column(Float)
    avg_speed_mps: Mapped[float] = mapped_column(Float)
    start_odometer_m: Mapped[float] = mapped_column(Float(53))
    end_odometer_m: Mapped[float] = mapped_column(Float(53))
    # The engine state right after the point that closed the trip, and that point's time: a
    # replay for late points starts from the newest checkpoint before them.
    state_after: Mapped[dict[str, Any]] = mapped_column(Attributes)
    checkpoint_at: Mapped[datetime]


class StopRow(IdMixin, TenantMixin, Base):
    """A stay between two trips (see `derive.trips.Stop`)."""

    __tablename__ = "stops"
    __table_args__ = (
        UniqueConstraint("device_id", "start_time"),
        Index("ix_stops_vehicle_id_start_time", "vehicle_id", "start_time"),
    )

    device_id: Mapped[uuid.UUID] = mapped_column()
    vehicle_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    start_time: Mapped[datetime]
    end_time: Mapped[datetime]
    lat: Mapped[float] = mapped_column(Float(53))
    lon: Mapped[float] = mapped_column(Float(53))
    duration_s: Mapped[float] = mapped_column(Float(53))


class TelemetryEvent(IdMixin, TenantMixin, Base):
    """A derived event (see `derive.events.Event`); stored once per (device, key)."""

    __tablename__ = "telemetry_events"
    __table_args__ = (
        UniqueConstraint("device_id", "key"),
        Index("ix_telemetry_events_tenant_id_time", "tenant_id", "time"),
        Index("ix_telemetry_events_vehicle_id_time", "vehicle_id", "time"),
    )

    device_id: Mapped[uuid.UUID] = mapped_column()
    vehicle_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    type: Mapped[str] = mapped_column(String(32))
    time: Mapped[datetime]
    lat: Mapped[float | None] = mapped_column(Float(53), default=None)
    lon: Mapped[float | None] = mapped_column(Float(53), default=None)
    value: Mapped[float | None] = mapped_column(Float, default=None)
    duration_s: Mapped[float | None] = mapped_column(Float(53), default=None)
    limit: Mapped[float | None] = mapped_column(Float, default=None)
    geofence_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    key: Mapped[str] = mapped_column(String(200))
