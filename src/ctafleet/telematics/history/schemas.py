from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import Field

from ctafleet.kernel.schemas import ReadModel


class TripRead(ReadModel):
    """A trip: from leaving a place to having stayed at the next (SI units, UTC)."""

    id: uuid.UUID
    device_id: uuid.UUID
    vehicle_id: uuid.UUID | None
    start_time: datetime
    end_time: datetime
    start_lat: float
    start_lon: float
    end_lat: float
    end_lon: float
    distance_m: float
    duration_s: float
    driving_s: float
    idle_s: float = Field(description="Halts inside the trip shorter than a stop.")
    max_speed_mps: float
    avg_speed_mps: float = Field(description="Distance over the whole duration.")
    start_odometer_m: float
    end_odometer_m: float


class EventRead(ReadModel):
    """A derived event; what `value`, `duration_s` and `limit` hold depends on `type`."""

    id: uuid.UUID
    device_id: uuid.UUID
    vehicle_id: uuid.UUID | None
    type: str
    time: datetime
    lat: float | None
    lon: float | None
    value: float | None
    duration_s: float | None
    limit: float | None
    geofence_id: uuid.UUID | None
    key: str = Field(description="Stable identity: the same event always has the same key.")
