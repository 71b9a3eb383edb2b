"""Synthetic tracks: a vehicle driven second by second, with the distance it truly covered."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from shapely.geometry import Polygon  # type: ignore[import-untyped]

from ctafleet.telematics.derive import (
    Advance,
    DeviceState,
    Event,
    Geofence,
    GeofenceSet,
    Rules,
    advance,
)
from ctafleet.telematics.derive.geo import destination
from ctafleet.telematics.points import Point

# A Monday.
T0 = datetime(2024, 5, 6, 8, 0, tzinfo=UTC)
UID = "dev-1"
# Helsinki, where degrees of longitude are half as long as at the equator.
HOME = (60.17, 24.94)
# Acceleration the builder uses between speeds: brisk, but well under harsh.
GENTLE_MPS2 = 1.5


class Drive:
    """Points of one device. Each call appends; `truth_m` is the distance really driven."""

    def __init__(
        self,
        *,
        lat: float = HOME[0],
        lon: float = HOME[1],
        t: datetime = T0,
        uid: str = UID,
        **defaults: Any,
    ) -> None:
        self.lat = lat
        self.lon = lon
        self.t = t
        self.uid = uid
        self.speed = 0.0
        self.bearing = 90.0
        self.truth_m = 0.0
        self.defaults = defaults
        self.points: list[Point] = []

    def point(self, **fields: Any) -> Point:
        """A point at the current time and position (fields override)."""
        values: dict[str, Any] = {
            "device_uid": self.uid,
            "fix_time": self.t,
            "lat": self.lat,
            "lon": self.lon,
            "speed_mps": self.speed,
            "course_deg": self.bearing,
            "accuracy_m": 5.0,
        }
        values.update(self.defaults)
        values.update(fields)
        p = Point(**values)
        self.points.append(p)
        return p

    def _step(self, dt: float, speed: float, **fields: Any) -> None:
        metres = (self.speed + speed) / 2 * dt
        self.lat, self.lon = destination(self.lat, self.lon, self.bearing, metres)
        self.truth_m += metres
        self.speed = speed
        self.t += timedelta(seconds=dt)
        self.point(**fields)

    def ramp(self, speed: float, *, rate: float = GENTLE_MPS2, **fields: Any) -> Drive:
        """Change speed at `rate` m/s^2 with a fix every second."""
        while abs(self.speed - speed) > 1e-9:
            delta = max(-rate, min(rate, speed - self.speed))
            self._step(1.0, self.speed + delta, **fields)
        return self

    def drive(
        self,
        *,
        seconds: float,
        speed: float,
        bearing: float | None = None,
        every_s: float = 1.0,
        rate: float = GENTLE_MPS2,
        **fields: Any,
    ) -> Drive:
        """Reach `speed` at `rate`, then hold it for `seconds`, a fix every `every_s`."""
        if bearing is not None:
            self.bearing = bearing
        self.ramp(speed, rate=rate, **fields)
        n = round(seconds / every_s)
        for _ in range(n):
            self._step(every_s, speed, **fields)
        return self

    def park(self, *, seconds: float, every_s: float = 30.0, **fields: Any) -> Drive:
        """Slow down gently, then stand still for `seconds`, a fix every `every_s`."""
        self.ramp(0.0, **fields)
        n = round(seconds / every_s)
        for _ in range(n):
            self._step(every_s, 0.0, **fields)
        return self

    def wait(self, seconds: float) -> Drive:
        """Time passes without a message."""
        self.t += timedelta(seconds=seconds)
        return self


def box(*, east_from: float, east_to: float, half_width: float = 200.0) -> Polygon:
    """A rectangle along the road east of HOME, in metres from it."""
    corners = []
    for east, north in (
        (east_from, -half_width),
        (east_to, -half_width),
        (east_to, half_width),
        (east_from, half_width),
    ):
        lat, lon = destination(*destination(*HOME, 90.0, east), 0.0, north)
        corners.append((lon, lat))
    return Polygon(corners)


def east(metres: float) -> tuple[float, float]:
    return destination(*HOME, 90.0, metres)


def run(
    points: list[Point],
    *,
    rules: Rules | None = None,
    geofences: Sequence[Geofence] | GeofenceSet | None = None,
    state: DeviceState | None = None,
) -> Advance:
    return advance(state, points, rules=rules or Rules(), geofences=geofences or ())


def kinds(result: Advance) -> list[str]:
    return [e.type for e in result.events]


def moved(p: Point, **fields: Any) -> Point:
    return replace(p, **fields)


def gid(n: int) -> uuid.UUID:
    return uuid.UUID(int=n)


def at(event: Event) -> tuple[float, float]:
    """Where an event happened (every event of these tracks has a position)."""
    assert event.lat is not None
    assert event.lon is not None
    return event.lat, event.lon
