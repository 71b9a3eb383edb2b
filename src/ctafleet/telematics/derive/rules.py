"""The thresholds that turn raw points into trips, stops and events.

One `Rules` per vehicle (a tenant's defaults with the vehicle's own limits on top). Every
duration is in seconds, every distance in metres, every speed in m/s (SI inside; display units
are the tenant's concern).
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Any, Protocol


@dataclass(frozen=True, slots=True, kw_only=True)
class Rules:
    """Thresholds for one vehicle; the defaults suit road vehicles with 1-30 s reporting."""

    # A trip ends after the vehicle has been stationary (or its ignition off) this long; shorter
    # halts (traffic lights, deliveries under five minutes) stay inside the trip.
    min_stop_s: float = 300.0
    # A "trip" shorter than this is GPS drift or manoeuvring in a yard: it is discarded and the
    # stop around it continues. Also how far the vehicle must get from where it stopped to count
    # as having left, whatever its reported speed.
    min_trip_distance_m: float = 200.0
    # Fixes whose reported accuracy (or HDOP x `hdop_to_m`) is worse than this are ignored.
    max_accuracy_m: float = 100.0
    # No road vehicle covers ground faster (252 km/h): a fix that implies more from the last
    # accepted one is a jump, not a movement.
    max_plausible_speed_mps: float = 70.0
    # After this many consecutive rejected fixes that agree with one another, the vehicle really
    # is there (it was moved while the device was off, or the first fix was the bad one).
    relocate_after: int = 3
    # Rough horizontal error per unit of HDOP for devices that send HDOP but no accuracy.
    hdop_to_m: float = 5.0
    # The vehicle's own speed limit; None: only geofence limits apply.
    speed_limit_mps: float | None = None
    # Above the limit this long without interruption makes one overspeed event.
    overspeed_min_s: float = 10.0
    # Ignition on and not moving this long makes one idle event.
    idle_min_s: float = 300.0
    # At or above this speed the vehicle moves; below it GPS noise cannot be told from motion.
    moving_speed_mps: float = 1.0
    # Speed change per second between fixes at most `harsh_window_s` apart (about 0.3 g).
    harsh_accel_mps2: float = 3.0
    harsh_brake_mps2: float = -3.5
    harsh_window_s: float = 5.0
    # Below this the battery is low; it recovers only above threshold + recover, so a battery
    # hovering at the threshold makes one event, not one per message.
    low_battery_pct: float = 20.0
    battery_recover_pct: float = 5.0
    # Silent this long: offline. Also the longest gap that engine time and idle or overspeed
    # episodes span: what happened during a longer silence is unknown.
    offline_after_s: float = 900.0
    # Inside one geofence this long makes one dwell event (a geofence may set its own).
    dwell_s: float = 600.0

    def tunable(self) -> dict[str, float | None]:
        """The thresholds a tenant may set (`TENANT_TUNABLE`), with their values here."""
        return {name: getattr(self, name) for name in TENANT_TUNABLE}

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            if not math.isfinite(value):
                raise ValueError(f"rules: {f.name} must be finite, not {value!r}")
            if f.name == "harsh_brake_mps2":
                if value >= 0:
                    raise ValueError("rules: harsh_brake_mps2 is a deceleration: below zero")
            elif f.name in ("battery_recover_pct", "min_trip_distance_m"):
                if value < 0:
                    raise ValueError(f"rules: {f.name} must not be negative")
            elif value <= 0:
                raise ValueError(f"rules: {f.name} must be positive, not {value!r}")


# What a tenant's telemetry policy may change (the API's `rules`); the rest are properties of
# GPS and road vehicles, not of a fleet.
TENANT_TUNABLE = (
    "min_stop_s",
    "min_trip_distance_m",
    "max_accuracy_m",
    "speed_limit_mps",
    "overspeed_min_s",
    "idle_min_s",
    "harsh_accel_mps2",
    "harsh_brake_mps2",
    "low_battery_pct",
    "offline_after_s",
    "dwell_s",
)


def tenant_rules(overrides: dict[str, object] | None) -> Rules:
    """The defaults with a tenant's stored thresholds on top; keys it may not set (or that a
    later version added) are ignored. ValueError for values `Rules` refuses."""
    chosen = {k: v for k, v in (overrides or {}).items() if k in TENANT_TUNABLE}
    return Rules(**chosen)  # type: ignore[arg-type]


class RulesSource(Protocol):
    """The rules a device's points are derived with, by its tenant and vehicle; and the
    shortest silence any of them calls offline (the offline sweep's first filter). The
    worker's is `telematics.policy.TenantRules`, which reads the tenants' policies."""

    def __call__(self, tenant_id: uuid.UUID, vehicle_id: uuid.UUID | None) -> Rules: ...

    @property
    def min_offline_after_s(self) -> float: ...

    async def refresh(self, session: Any, tenants: Iterable[uuid.UUID] | None) -> None:
        """Brings the rules of `tenants` (None: of all) up to date before they are asked."""


class DefaultRules:
    """The same `Rules()` for every vehicle."""

    def __init__(self, rules: Rules | None = None) -> None:
        self.rules = rules or Rules()

    def __call__(self, tenant_id: uuid.UUID, vehicle_id: uuid.UUID | None) -> Rules:
        return self.rules

    @property
    def min_offline_after_s(self) -> float:
        return self.rules.offline_after_s

    async def refresh(self, session: Any, tenants: Iterable[uuid.UUID] | None) -> None:
        return None
