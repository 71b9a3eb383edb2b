"""What the derived-data engine reports about a vehicle, and how consumers receive it.

Every event carries a `key` that is the same whenever the same input produces it: a replay
from a checkpoint, a redelivered batch or a repeated offline sweep yields the same keys, so a
consumer stores events idempotently on (device, key) and notifies once.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol, get_args

EventType = Literal[
    "overspeed",
    "idle",
    "harsh_acceleration",
    "harsh_braking",
    "geofence_enter",
    "geofence_exit",
    "geofence_dwell",
    "low_battery",
    "device_offline",
    "device_online",
]
EVENT_TYPES: frozenset[str] = frozenset(get_args(EventType))


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """One thing that happened to a vehicle, at `time`, where it was (None: never had a fix).

    What `value`, `duration_s` and `limit` hold, per type:

    | type                  | value                 | duration_s          | limit              |
    |-----------------------|-----------------------|---------------------|--------------------|
    | overspeed             | max speed, m/s        | above the limit     | lowest limit, m/s  |
    | idle                  | -                     | ignition on, still  | -                  |
    | harsh_acceleration    | m/s^2 (None: alarm)   | -                   | threshold, m/s^2   |
    | harsh_braking         | m/s^2 (None: alarm)   | -                   | threshold, m/s^2   |
    | geofence_enter        | -                     | -                   | -                  |
    | geofence_exit         | -                     | time inside         | -                  |
    | geofence_dwell        | -                     | time inside so far  | dwell threshold, s |
    | low_battery           | battery, %            | -                   | threshold, %       |
    | device_offline        | -                     | -                   | silence allowed, s |
    | device_online         | -                     | silence, s          | -                  |

    Episodes (overspeed, idle) are reported when they end, with their start as `time`.
    """

    device_uid: str
    type: EventType
    time: datetime
    lat: float | None
    lon: float | None
    key: str
    value: float | None = None
    duration_s: float | None = None
    limit: float | None = None
    geofence_id: uuid.UUID | None = None

    def as_dict(self) -> dict[str, Any]:
        """The JSON form (API responses, the notification payload, the event table's data)."""
        return {
            "key": self.key,
            "device_uid": self.device_uid,
            "type": self.type,
            "time": iso_utc(self.time),
            "lat": self.lat,
            "lon": self.lon,
            "value": self.value,
            "duration_s": self.duration_s,
            "limit": self.limit,
            "geofence_id": str(self.geofence_id) if self.geofence_id is not None else None,
        }


class EventSink(Protocol):
    """Where the worker hands derived events once their batch is committed (notifications).

    `publish` receives each batch's events in order; the same event may arrive again after a
    redelivery or a replay (same `key`), so an implementation deduplicates on (device_uid,
    key). It must not block the worker: queue the work and return. Raising makes the worker
    retry the whole batch, so transient failures belong inside the sink.
    """

    async def publish(self, events: Sequence[Event]) -> None: ...


def iso_utc(when: datetime) -> str:
    """ISO 8601 in UTC with a `Z`, microseconds only when present."""
    text = when.astimezone(UTC).isoformat()
    return text.removesuffix("+00:00") + "Z"


def event_key(
    *, kind: EventType, device_uid: str, when: datetime, geofence_id: uuid.UUID | None = None
) -> str:
    """The stable identity of an event: its type, device, defining time (and geofence)."""
    base = f"{kind}:{device_uid}:{iso_utc(when)}"
    return base if geofence_id is None else f"{base}:{geofence_id}"
