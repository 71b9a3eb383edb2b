"""Trips and stops, the periods a vehicle's day divides into."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ctafleet.telematics.derive.events import iso_utc


@dataclass(frozen=True, slots=True, kw_only=True)
class Trip:
    """From leaving a place to having stayed at the next one for `Rules.min_stop_s`.

    Starts at the last fix before the vehicle moved (or at ignition on) and ends where it
    became stationary. `duration_s` is `driving_s` (moving, or halting briefly between moving
    fixes, like a roll to a stop) plus `idle_s` (halts inside the trip shorter than a stop).
    `avg_speed_mps` is distance over the whole duration. Distances follow the odometer: the
    device's own when it reports one, else filtered GPS distance.
    """

    device_uid: str
    start_time: datetime
    end_time: datetime
    start_lat: float
    start_lon: float
    end_lat: float
    end_lon: float
    distance_m: float
    duration_s: float
    driving_s: float
    idle_s: float
    max_speed_mps: float
    avg_speed_mps: float
    start_odometer_m: float
    end_odometer_m: float
    # The device state (JSON) right after the point that closed this trip: replaying the
    # points after that point from it derives what followed. None for a trip in progress.
    state_after: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        """The JSON form, without the checkpoint (stored apart from what users see)."""
        return {
            "device_uid": self.device_uid,
            "start_time": iso_utc(self.start_time),
            "end_time": iso_utc(self.end_time),
            "start_lat": self.start_lat,
            "start_lon": self.start_lon,
            "end_lat": self.end_lat,
            "end_lon": self.end_lon,
            "distance_m": self.distance_m,
            "duration_s": self.duration_s,
            "driving_s": self.driving_s,
            "idle_s": self.idle_s,
            "max_speed_mps": self.max_speed_mps,
            "avg_speed_mps": self.avg_speed_mps,
            "start_odometer_m": self.start_odometer_m,
            "end_odometer_m": self.end_odometer_m,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Stop:
    """A stay between two trips (or before the first), reported once the next trip is real."""

    device_uid: str
    start_time: datetime
    end_time: datetime
    lat: float
    lon: float
    duration_s: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "device_uid": self.device_uid,
            "start_time": iso_utc(self.start_time),
            "end_time": iso_utc(self.end_time),
            "lat": self.lat,
            "lon": self.lon,
            "duration_s": self.duration_s,
        }
