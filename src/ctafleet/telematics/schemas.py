from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import Field, create_model

from ctafleet.kernel.schemas import ReadModel, Strict

DeviceProtocol = Literal["osmand", "json", "mqtt"]


class DeviceCreate(Strict):
    unique_id: str = Field(
        min_length=3,
        max_length=64,
        pattern=r"^[A-Za-z0-9._:-]+$",
        description="The identifier the device reports (IMEI, OsmAnd device id).",
    )
    name: str = Field("", max_length=100)
    protocol: DeviceProtocol = "osmand"
    vehicle_id: uuid.UUID | None = None
    allow_id_only: bool = Field(
        False,
        description="A legacy tracker that cannot carry a credential may send by its id alone "
        "through the tenant ingest key.",
    )
    feeds_meters: bool | None = Field(
        None,
        description="Whether its distance and ignition time move the vehicle's odometer and "
        "engine hours; one device per vehicle does. Default: yes if no other device of the "
        "vehicle does.",
    )


class DeviceUpdate(Strict):
    name: str | None = Field(None, max_length=100)
    protocol: DeviceProtocol | None = None
    vehicle_id: uuid.UUID | None = None
    is_active: bool | None = None
    allow_id_only: bool | None = None
    feeds_meters: bool | None = None


class DeviceRead(ReadModel):
    id: uuid.UUID
    unique_id: str
    name: str
    protocol: str
    vehicle_id: uuid.UUID | None
    is_active: bool
    allow_id_only: bool
    feeds_meters: bool
    credential_prefix: str = Field(
        description="First characters of the credential, to tell it apart."
    )
    credential_rotated_at: datetime
    last_seen_at: datetime | None
    created_at: datetime
    updated_at: datetime
    version: int


class DeviceWithCredential(DeviceRead):
    credential: str = Field(
        description="The ingest credential. Shown only now: store it on the device."
    )


class PositionRead(ReadModel):
    """One stored message of a device (SI units, UTC)."""

    device_id: uuid.UUID
    vehicle_id: uuid.UUID | None
    fix_time: datetime
    received_at: datetime
    lat: float | None
    lon: float | None
    valid: bool = Field(description="False for a fix the device marked invalid or at 0,0.")
    server_time: bool = Field(description="The message had no time: `fix_time` is receipt.")
    speed_mps: float | None
    course_deg: float | None
    altitude_m: float | None
    accuracy_m: float | None
    hdop: float | None
    battery_pct: float | None
    charging: bool | None
    ignition: bool | None
    odometer_m: float | None
    driver_unique_id: str | None
    attributes: dict[str, int | float | bool | str] | None


class PositionPage(ReadModel):
    data: list[PositionRead]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page.")


class LastPositionRead(ReadModel):
    """A device's newest fix and last contact: what the map shows."""

    device_id: uuid.UUID
    vehicle_id: uuid.UUID | None
    last_message_at: datetime
    fix_time: datetime | None
    lat: float | None
    lon: float | None
    speed_mps: float | None
    course_deg: float | None
    altitude_m: float | None
    accuracy_m: float | None
    battery_pct: float | None
    ignition: bool | None
    odometer_m: float | None


class Snapshot(ReadModel):
    data: list[LastPositionRead]


class RejectedPoint(ReadModel):
    index: int = Field(description="The point's position in the request's `points`.")
    reason: str
    field: str | None


class BatchAccepted(ReadModel):
    accepted: int = Field(description="Points queued; they are stored within seconds.")
    rejected: list[RejectedPoint]


class DeriveRulesUpdate(Strict):
    """A tenant's own thresholds for trips, stops and events (SI units); a field left out
    stays as it is, `null` returns it to the default."""

    min_stop_s: float | None = Field(
        None, ge=30, le=86400, description="Stationary this long ends a trip (300)."
    )
    min_trip_distance_m: float | None = Field(
        None, ge=0, le=100000, description="Shorter trips are dropped as GPS drift (200)."
    )
    max_accuracy_m: float | None = Field(
        None, ge=5, le=10000, description="Fixes reported less accurate are ignored (100)."
    )
    speed_limit_mps: float | None = Field(
        None, gt=0, le=100, description="The fleet's own speed limit (none: geofences only)."
    )
    overspeed_min_s: float | None = Field(
        None, ge=1, le=3600, description="Above a limit this long makes overspeed (10)."
    )
    idle_min_s: float | None = Field(
        None, ge=30, le=86400, description="Ignition on, not moving, this long: idle (300)."
    )
    harsh_accel_mps2: float | None = Field(
        None, ge=0.5, le=20, description="Speed gained per second that is harsh (3.0)."
    )
    harsh_brake_mps2: float | None = Field(
        None, ge=-20, le=-0.5, description="Speed lost per second that is harsh (-3.5)."
    )
    low_battery_pct: float | None = Field(
        None, gt=0, lt=100, description="Below this the device's battery is low (20)."
    )
    offline_after_s: float | None = Field(
        None, ge=60, le=7 * 86400, description="Silent this long: device_offline (900)."
    )
    dwell_s: float | None = Field(
        None, ge=10, le=7 * 86400, description="Inside a geofence this long: dwell (600)."
    )


# The same fields as read: each with the value in effect (the tenant's, else the default).
DeriveRulesRead = create_model(  # type: ignore[call-overload]
    "DeriveRulesRead",
    __base__=ReadModel,
    **{
        name: (float | None, Field(description=f.description))
        for name, f in (DeriveRulesUpdate.model_fields.items())
    },
)


class TelemetryPolicyRead(ReadModel):
    retention_days: int = Field(description="Positions older than this are deleted.")
    ingest_key_prefix: str | None = Field(
        description="First characters of the tenant ingest key, if there is one."
    )
    rules: DeriveRulesRead = Field(
        validation_alias="effective_rules",
        description="The thresholds the tenant's data is derived with.",
    )
    version: int


class TelemetryPolicyUpdate(Strict):
    retention_days: int | None = Field(None, ge=1, le=36500)
    rules: DeriveRulesUpdate | None = Field(
        None, description="Changes to the derivation thresholds; they apply from the next batch."
    )


class IngestKey(ReadModel):
    ingest_key: str = Field(
        description="The tenant ingest key. Shown only now: configure it on the trackers."
    )
    osmand_path: str = Field(
        description="The OsmAnd URL path that carries it: id-only devices (those that allow "
        "it) send there with their id alone."
    )
