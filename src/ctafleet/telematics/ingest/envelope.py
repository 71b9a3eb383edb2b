"""What the queue carries: one authenticated device's points, in a compact wire form.

An envelope is written once per ingest request and read once per batch, so its form is a
plain JSON array (orjson, a few microseconds) rather than a pickled or validated object.
Times travel as integer microseconds since the epoch: exact, where a float would round.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from ctafleet.telematics.points import Point

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


def to_us(moment: datetime) -> int:
    return (moment - EPOCH) // _US


def from_us(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


@dataclass(frozen=True, slots=True)
class Envelope:
    tenant_id: uuid.UUID
    device_id: uuid.UUID
    vehicle_id: uuid.UUID | None
    received_at: datetime
    points: tuple[Point, ...]


def _point(p: Point) -> list[Any]:
    return [
        to_us(p.fix_time),
        p.lat,
        p.lon,
        p.valid,
        p.server_time,
        p.speed_mps,
        p.course_deg,
        p.altitude_m,
        p.accuracy_m,
        p.hdop,
        p.battery_pct,
        p.charging,
        p.ignition,
        p.odometer_m,
        p.driver_unique_id,
        p.attributes or None,
    ]


def encode(envelope: Envelope) -> bytes:
    return orjson.dumps(
        [
            1,  # the form's version: a worker refuses a form it does not know
            str(envelope.tenant_id),
            str(envelope.device_id),
            str(envelope.vehicle_id) if envelope.vehicle_id else None,
            to_us(envelope.received_at),
            envelope.points[0].device_uid if envelope.points else "",
            [_point(p) for p in envelope.points],
        ]
    )


def decode(data: bytes) -> Envelope:
    version, tenant, device, vehicle, received, uid, points = orjson.loads(data)
    if version != 1:
        raise ValueError(f"unknown envelope version {version}")
    return Envelope(
        tenant_id=uuid.UUID(tenant),
        device_id=uuid.UUID(device),
        vehicle_id=uuid.UUID(vehicle) if vehicle else None,
        received_at=from_us(received),
        points=tuple(
            Point(
                device_uid=uid,
                fix_time=from_us(f[0]),
                lat=f[1],
                lon=f[2],
                valid=f[3],
                server_time=f[4],
                speed_mps=f[5],
                course_deg=f[6],
                altitude_m=f[7],
                accuracy_m=f[8],
                hdop=f[9],
                battery_pct=f[10],
                charging=f[11],
                ignition=f[12],
                odometer_m=f[13],
                driver_unique_id=f[14],
                attributes=f[15] or {},
            )
            for f in points
        ),
    )
