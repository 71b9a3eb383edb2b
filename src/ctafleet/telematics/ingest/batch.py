"""The JSON batch format of `POST /api/v1/telemetry`: many points, each checked on its own.

    {"device": "<unique id>",            # optional with a device credential
     "points": [{"time": "2026-12-01T08:00:00Z" | 1764576000 | 1764576000000,
                 "lat": 52.5, "lon": 13.4,
                 "speed": 12.5,          # m/s
                 "course": 90, "altitude": 35, "accuracy": 5, "hdop": 0.9,
                 "battery": 81,          # percent
                 "charging": false, "ignition": true,
                 "odometer": 123456.0,   # metres, the device's own
                 "driver": "D-17", "valid": true,
                 "device": "<unique id>",  # per point, when a user sends for several devices
                 "attributes": {"fuel": 40.5}}]}

SI units throughout (unlike OsmAnd's knots). A point that does not check out is reported by
its index and reason; the others are accepted. Pure: no framework, database or clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson

from ctafleet.telematics.points import Attribute, Point
from ctafleet.telematics.timeparse import from_epoch, parse_device_time

FUTURE_TOLERANCE = timedelta(minutes=5)
MAX_ATTRIBUTES = 64
MAX_KEY_LENGTH = 64
MAX_STRING_LENGTH = 256
MAX_ID_LENGTH = 64
_NUMBERS = {
    "speed": "speed_mps",
    "course": "course_deg",
    "altitude": "altitude_m",
    "accuracy": "accuracy_m",
    "hdop": "hdop",
    "battery": "battery_pct",
    "odometer": "odometer_m",
}
_BOOLEANS = {"charging": "charging", "ignition": "ignition", "valid": "valid"}
_KNOWN = {"time", "lat", "lon", "device", "driver", "attributes", *_NUMBERS, *_BOOLEANS}


class BatchError(Exception):
    """The request as a whole is unusable (not JSON, no `points` list, too many points)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class _PointError(Exception):
    def __init__(self, reason: str, field: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field


@dataclass(frozen=True, slots=True)
class Rejected:
    index: int
    reason: str
    field: str | None

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "reason": self.reason, "field": self.field}


@dataclass
class Parsed:
    points: list[Point]
    rejected: list[Rejected]


def _device(value: object, field: str) -> str:
    if (
        not isinstance(value, str)
        or not 1 <= len(value) <= MAX_ID_LENGTH
        or not value.isprintable()
    ):
        raise _PointError("bad-device", field)
    return value


def _number(value: object, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _PointError("bad-number", field)
    return float(value)


def _time(value: object, now: datetime) -> datetime:
    try:
        if isinstance(value, bool):
            raise ValueError
        if isinstance(value, int | float):
            moment = from_epoch(value)
        elif isinstance(value, str) and len(value) <= 40:
            moment = parse_device_time(value)
        else:
            raise ValueError
    except ValueError:
        raise _PointError("bad-time", "time") from None
    if moment > now + FUTURE_TOLERANCE:
        raise _PointError("future-fix", "time")
    return moment


def _attributes(value: object) -> dict[str, Attribute]:
    if not isinstance(value, dict) or len(value) > MAX_ATTRIBUTES:
        raise _PointError("bad-attributes", "attributes")
    out: dict[str, Attribute] = {}
    for key, item in value.items():
        if len(key) > MAX_KEY_LENGTH:
            raise _PointError("bad-attributes", "attributes")
        if isinstance(item, bool | str):
            if isinstance(item, str) and len(item) > MAX_STRING_LENGTH:
                raise _PointError("bad-attributes", f"attributes.{key}")
            out[key] = item
        elif isinstance(item, int | float) and not isinstance(item, bool):
            if isinstance(item, float) and not math.isfinite(item):
                raise _PointError("bad-attributes", f"attributes.{key}")
            if isinstance(item, int) and abs(item) >= 2**63:
                raise _PointError("bad-attributes", f"attributes.{key}")
            out[key] = item
        elif item is not None:
            raise _PointError("bad-attributes", f"attributes.{key}")
    return out


def _point(raw: object, default_device: str | None, now: datetime) -> Point:
    if not isinstance(raw, dict):
        raise _PointError("not-an-object")
    unknown = raw.keys() - _KNOWN
    if unknown:
        raise _PointError("unknown-field", sorted(unknown)[0])
    device = raw.get("device", default_device)
    if device is None:
        raise _PointError("missing-device", "device")
    device = _device(device, "device")
    if "time" not in raw:
        raise _PointError("missing-time", "time")
    fix_time = _time(raw["time"], now)
    lat, lon = raw.get("lat"), raw.get("lon")
    if (lat is None) != (lon is None):
        raise _PointError("bad-coordinates", "lat" if lat is None else "lon")
    valid = True
    if lat is not None:
        lat, lon = _number(lat, "lat"), _number(lon, "lon")
        if not (-90.0 <= lat <= 90.0):
            raise _PointError("bad-coordinates", "lat")
        if not (-180.0 <= lon <= 180.0):
            raise _PointError("bad-coordinates", "lon")
        valid = not (lat == 0.0 and lon == 0.0)  # lat=lon=0 is no fix
    values: dict[str, Any] = {}
    for key, name in _NUMBERS.items():
        if raw.get(key) is not None:
            number = _number(raw[key], key)
            if number < 0 and key != "altitude":
                raise _PointError("negative", key)
            values[name] = number
    if "course_deg" in values:
        values["course_deg"] %= 360.0
    if values.get("battery_pct", 0.0) > 100.0:
        raise _PointError("bad-battery", "battery")
    for key, name in _BOOLEANS.items():
        if raw.get(key) is not None:
            if not isinstance(raw[key], bool):
                raise _PointError("bad-boolean", key)
            values[name] = raw[key]
    values["valid"] = valid and values.get("valid", True)
    driver = raw.get("driver")
    if driver is not None:
        driver = _device(driver, "driver")
    attributes = _attributes(raw["attributes"]) if raw.get("attributes") is not None else {}
    return Point(
        device_uid=device,
        fix_time=fix_time,
        lat=lat,
        lon=lon,
        driver_unique_id=driver,
        attributes=attributes,
        **values,
    )


def parse(body: bytes, *, now: datetime, max_points: int, device: str | None = None) -> Parsed:
    """`device`: the unique id a device credential names (its points may omit it, and may not
    name another)."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BatchError("bad-json", "the body is not JSON") from None
    if not isinstance(document, dict) or not isinstance(document.get("points"), list):
        raise BatchError("bad-batch", 'the body must be an object with a "points" list')
    if document.keys() - {"device", "points"}:
        raise BatchError("bad-batch", 'only "device" and "points" are allowed at the top level')
    default = document.get("device")
    if default is not None:
        try:
            default = _device(default, "device")
        except _PointError:
            raise BatchError("bad-device", '"device" must be a unique id string') from None
    if device is not None:
        if default is not None and default != device:
            raise BatchError("device-mismatch", "the batch names another device")
        default = device
    raw_points = document["points"]
    if len(raw_points) > max_points:
        raise BatchError("too-many-points", f"at most {max_points} points per request")
    points: list[Point] = []
    rejected: list[Rejected] = []
    for index, raw in enumerate(raw_points):
        try:
            point = _point(raw, default, now)
            if device is not None and point.device_uid != device:
                raise _PointError("device-mismatch", "device")
            points.append(point)
        except _PointError as exc:
            rejected.append(Rejected(index, exc.reason, exc.field))
    return Parsed(points, rejected)
