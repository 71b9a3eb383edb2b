"""One normalised telemetry message, whatever protocol brought it (OsmAnd, JSON batch, MQTT).

SI units and UTC inside: metres, metres per second, degrees, seconds. Every protocol decoder
produces these and everything downstream (queue, writer, derived data) consumes only these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

# A typed attribute the device sent that has no field of its own (cell towers, Wi-Fi access
# points, vendor keys): kept as number, boolean or string.
Attribute = int | float | bool | str


@dataclass(frozen=True, slots=True)
class Point:
    """A fix (or a message without one) from one device.

    `lat`/`lon` are None for a message without coordinates (a heartbeat, a push-token upload):
    it updates the device's last contact only. `valid` is False for a fix the device marked
    invalid and for `lat=lon=0`, which is no fix at all: such a point is stored with its other
    data but never moves the vehicle, its odometer or its trips.
    """

    device_uid: str
    fix_time: datetime
    lat: float | None = None
    lon: float | None = None
    valid: bool = True
    # True when the message carried no time and `fix_time` is the server's reception time.
    server_time: bool = False
    speed_mps: float | None = None
    course_deg: float | None = None
    altitude_m: float | None = None
    accuracy_m: float | None = None
    hdop: float | None = None
    battery_pct: float | None = None
    charging: bool | None = None
    ignition: bool | None = None
    # What the device itself counts (its odometer or total distance), when it reports one.
    odometer_m: float | None = None
    driver_unique_id: str | None = None
    attributes: dict[str, Attribute] = field(default_factory=dict)

    @property
    def has_fix(self) -> bool:
        """Coordinates that may move the vehicle."""
        return self.lat is not None and self.lon is not None and self.valid
