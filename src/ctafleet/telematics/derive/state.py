"""The running state of one device's derived data: everything the next point depends on.

`advance` reads only this and the new points, so a `DeviceState` stored after a batch (the
worker keeps it in `device_states`) or after a trip (`Trip.state_after`)
continues exactly where it left off. Times are epoch seconds (a float holds a microsecond
datetime exactly for millennia), positions degrees, distances metres; the JSON form is these
same numbers, so a round trip through JSON changes nothing.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields
from typing import Any

# Bumped when a field changes meaning; `from_json` refuses other versions rather than guess.
STATE_VERSION = 1


@dataclass(slots=True, kw_only=True)
class DeviceState:
    device_uid: str
    # The newest point derived (any point, with a fix or not).
    last_t: float | None = None
    # The newest accepted fix, and the speed the device reported with it.
    fix_t: float | None = None
    fix_lat: float | None = None
    fix_lon: float | None = None
    fix_speed: float | None = None
    moving: bool = False
    # Consecutive fixes rejected as jumps that agree with one another (the newest of them).
    rej_n: int = 0
    rej_t: float | None = None
    rej_lat: float | None = None
    rej_lon: float | None = None
    # Odometer: GPS distance counted from (odo_lat, odo_lon), or the device's own counter.
    odometer_m: float = 0.0
    odo_lat: float | None = None
    odo_lon: float | None = None
    dev_odo_m: float | None = None
    dev_odo_t: float | None = None
    engine_s: float = 0.0
    ignition: bool | None = None
    # The device has reported ignition on at least once: its ignition wire is connected, and
    # "off" means off (a device without the wire reports off forever).
    ignition_wired: bool = False
    battery_low: bool = False
    # Where and since when the vehicle has been stopped (None before its first fix).
    stop_t: float | None = None
    stop_lat: float | None = None
    stop_lon: float | None = None
    # The trip in progress: its start, odometer at start and running figures.
    trip_t: float | None = None
    trip_lat: float | None = None
    trip_lon: float | None = None
    trip_odo: float = 0.0
    trip_max_speed: float = 0.0
    trip_driving_s: float = 0.0
    trip_idle_s: float = 0.0
    # Stationary time inside the trip not yet known to be a halt (it may become the stop).
    trip_pending_s: float = 0.0
    trip_confirmed: bool = False
    # Stationary since: where the trip ends if the vehicle stays put for `min_stop_s`.
    cand_t: float | None = None
    cand_lat: float | None = None
    cand_lon: float | None = None
    cand_odo: float = 0.0
    # Overspeed episode in progress.
    over_t: float | None = None
    over_lat: float | None = None
    over_lon: float | None = None
    over_last_t: float = 0.0
    over_max: float = 0.0
    over_limit: float = 0.0
    # Idle episode in progress.
    idle_t: float | None = None
    idle_lat: float | None = None
    idle_lon: float | None = None
    idle_last_t: float = 0.0
    # The harsh event type the last speed change showed (one event per episode).
    harsh_kind: str | None = None
    # Harsh event types the device reports itself (its accelerometer beats speed deltas).
    harsh_alarms: tuple[str, ...] = ()
    # Geofences the vehicle is inside: id -> (entered at, dwell reported).
    inside: dict[str, tuple[float, bool]] = field(default_factory=dict)

    def copy(self) -> DeviceState:
        twin = copy.copy(self)
        twin.inside = dict(self.inside)
        return twin

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"v": STATE_VERSION}
        for name in _NAMES:
            out[name] = getattr(self, name)
        out["harsh_alarms"] = list(self.harsh_alarms)
        out["inside"] = {k: [since, dwelled] for k, (since, dwelled) in self.inside.items()}
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DeviceState:
        """The state `to_json` wrote; fields it lacks take their defaults."""
        if data.get("v") != STATE_VERSION:
            raise ValueError(f"device state: version {data.get('v')!r}, not {STATE_VERSION}")
        try:
            values: dict[str, Any] = {}
            for name, kind in _KINDS.items():
                if name in data:
                    raw = data[name]
                    values[name] = raw if raw is None else kind(raw)
            values["harsh_alarms"] = tuple(str(k) for k in data.get("harsh_alarms", ()))
            values["inside"] = {
                str(k): (float(v[0]), bool(v[1])) for k, v in data.get("inside", {}).items()
            }
            return cls(**values)
        except (TypeError, ValueError, IndexError, AttributeError) as exc:
            raise ValueError(f"device state: malformed ({exc})") from exc


_CONVERT = {"float": float, "int": int, "bool": bool, "str": str}
_KINDS = {
    f.name: _CONVERT[str(f.type).split(" | ")[0]]
    for f in fields(DeviceState)
    if f.name not in ("harsh_alarms", "inside")
}
_NAMES = tuple(_KINDS)
