"""The OsmAnd protocol as Traccar serves it: one HTTP request's parts in, normalised Points out.

Two forms share the protocol. The parameters of OsmAnd and Traccar Client,
`id=123456&lat=52.5&lon=13.4&timestamp=1609459200&speed=10.5...`, in the query string or, when
that is empty, in an `application/x-www-form-urlencoded` body (Traccar Client 10), whatever the
HTTP method. And JSON, chosen by the content type alone (Traccar Client 9, whose
background-geolocation plugin posts its own
`{"device_id", "location": {"timestamp", "coords": {...}, "battery": {...}, ...}}`).

Pure: no framework, no database, no clock of its own (`now` comes in). Every refusal is a
DecodeError with a short machine-readable reason, which the route answers with 400; nothing
else escapes, whatever the bytes.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl

import orjson

from ctafleet.kernel.units import MPS_PER_KNOT
from ctafleet.telematics.points import Attribute, Point
from ctafleet.telematics.timeparse import from_epoch, parse_device_time

# The device id column is 64 characters.
MAX_ID_LENGTH = 64
# What one message may store as attributes. A phone sends a dozen; the bounds keep a hostile or
# broken device from filling the positions table (every point is stored, and kept for months)
# with megabytes of keys, or a row too large for the batch insert.
MAX_ATTRIBUTES = 64
MAX_KEY_LENGTH = 64
MAX_STRING_LENGTH = 256
# Credentials and push tokens are compared or stored whole, never cut: longer is refused.
MAX_TOKEN_LENGTH = 256
# A position message is a few hundred bytes; parsing work stays bounded before it starts.
MAX_PAYLOAD = 64 * 1024
MAX_FIELDS = 256
# A phone's clock may run a little ahead; a fix further in the future is a broken clock whose
# points would sort after every real one.
FUTURE_TOLERANCE = timedelta(minutes=5)
# Integers up to 18 digits are numbers; longer digit strings are identifiers (an ICCID has 19 or
# 20) and stay strings rather than become floats that lose digits.
_INTEGER = re.compile(r"[+-]?[0-9]+")
_FLOAT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]{1,3})?")
_INT64 = 2**63

_TOKEN = "token"  # noqa: S105 - a parameter name


class DecodeError(Exception):
    """A request that is no OsmAnd message: `reason` is a stable slug for the 400 answer,
    `field` names the offending parameter when there is one."""

    def __init__(self, reason: str, field: str | None = None) -> None:
        super().__init__(reason if field is None else f"{reason}: {field}")
        self.reason = reason
        self.field = field


@dataclass(frozen=True, slots=True)
class Decoded:
    """What one request says: the device it names (not yet authenticated), its points, and the
    credential and push-notification token it carries, if any."""

    device_uid: str
    points: tuple[Point, ...]
    token: str | None = None
    notification_token: str | None = None


def decode(
    *,
    method: str,
    content_type: str | None,
    query: bytes | str,
    body: bytes,
    now: datetime,
) -> Decoded:
    """Decode one OsmAnd request. `now` is the reception time (timezone-aware), used for a
    message without a time and to refuse fixes from the future. `method` is accepted for the
    route's convenience: like Traccar, every method is read the same way."""
    del method
    if len(body) > MAX_PAYLOAD or len(query) > MAX_PAYLOAD:
        raise DecodeError("too-large")
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    elif now.tzinfo is not UTC:
        now = now.astimezone(UTC)
    text = query.decode("utf-8", "replace") if isinstance(query, bytes) else query
    pairs = _pairs(text) if text else []
    token = _take_token(pairs)
    if content_type is not None and content_type[:16].lower() == "application/json":
        return _decode_json(body, token, now)
    if not pairs and body:
        # The query string held nothing but perhaps the credential: Traccar Client 10 posts
        # its data as a form body.
        pairs = _pairs(body.decode("utf-8", "replace"))
        token = _take_token(pairs, token)
    return _decode_form(pairs, token, now)


def _pairs(text: str) -> list[tuple[str, str]]:
    """The pairs exactly as `parse_qsl` reads them; blank values (`hdop=`) are dropped, a blank
    value being an absent one."""
    if text.count("&") >= MAX_FIELDS:
        raise DecodeError("too-many-fields")
    if "%" in text or "+" in text:
        return parse_qsl(text)
    # Nothing to unquote (the common case: Traccar Client sends epoch times and plain
    # numbers): splitting alone gives parse_qsl's answer at a fifth of its cost.
    pairs = []
    for piece in text.split("&"):
        key, _, value = piece.partition("=")
        if value:
            pairs.append((key, value))
    return pairs


def _take_token(pairs: list[tuple[str, str]], token: str | None = None) -> str | None:
    """Remove every `token` pair (a credential is never stored as an attribute) and return it."""
    found = False
    for key, value in pairs:
        if key == _TOKEN:
            if token is not None and value != token:
                raise DecodeError("ambiguous-token")
            token, found = _token(value, _TOKEN), True
    if found:
        pairs[:] = [pair for pair in pairs if pair[0] != _TOKEN]
    return token


def _token(value: str, field: str) -> str:
    if len(value) > MAX_TOKEN_LENGTH or not value.isprintable():
        raise DecodeError("bad-value", field)
    return value


def _device_uid(value: str | None) -> str:
    if not value:
        raise DecodeError("missing-id")
    # Control characters would reach logs and the device column; no real id has them.
    if len(value) > MAX_ID_LENGTH or not value.isprintable():
        raise DecodeError("bad-id")
    return value


def _number(value: str, field: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise DecodeError("bad-value", field) from None
    if not math.isfinite(number):
        raise DecodeError("bad-value", field)
    return number


def _coordinate(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise DecodeError("bad-coordinates") from None
    return number  # finiteness and range are checked with the pair


def _boolean(value: str, field: str) -> bool:
    lowered = value.lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise DecodeError("bad-value", field)


def _time(value: str) -> datetime:
    try:
        return parse_device_time(value)
    except ValueError:
        raise DecodeError("bad-timestamp") from None


def _string(value: str) -> str:
    if len(value) > MAX_STRING_LENGTH:
        value = value[:MAX_STRING_LENGTH]
    # PostgreSQL text and JSONB refuse NUL: one would fail the whole batch insert.
    if "\x00" in value:
        value = value.replace("\x00", "\ufffd")
    return value


def _typed(value: str) -> Attribute:
    """An attribute as the device meant it: int, finite float, bool (true/false) or string."""
    if _INTEGER.fullmatch(value):
        return int(value) if len(value.lstrip("+-")) <= 18 else _string(value)
    if value == "true":
        return True
    if value == "false":
        return False
    if _FLOAT.fullmatch(value):
        number = float(value)
        if math.isfinite(number):
            return number
    return _string(value)


def _put(attributes: dict[str, Attribute], key: str, value: Attribute) -> None:
    # A repeated key replaces its value; a new one must fit the bounds (keys are never cut:
    # two long keys cut alike would collide).
    fits = len(attributes) < MAX_ATTRIBUTES and len(key) <= MAX_KEY_LENGTH and key.isprintable()
    if fits or key in attributes:
        attributes[key] = value


def _valid_pair(lat: float | None, lon: float | None) -> bool:
    """Check the coordinates; False for `lat=lon=0`, which is no fix."""
    if lat is None and lon is None:
        return True
    if lat is None or lon is None:
        raise DecodeError("bad-coordinates")
    # NaN fails both comparisons; infinities fail the range.
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
        raise DecodeError("bad-coordinates")
    return not (lat == 0.0 and lon == 0.0)


def _not_future(fix_time: datetime, now: datetime) -> None:
    if fix_time > now + FUTURE_TOLERANCE:
        raise DecodeError("future-fix")


def _nonnegative(value: float | None) -> float | None:
    # -1 (or any negative) is how devices say "unknown" for speed, course and accuracy.
    return value if value is not None and value >= 0 else None


def _course(value: float | None) -> float | None:
    return value % 360.0 if value is not None and value >= 0 else None


def _percent(value: float | None) -> float | None:
    return value if value is not None and 0.0 <= value <= 100.0 else None


# Query/form keys that fill Point fields or the request's own parts, never attributes.
_FORM_KEYS = frozenset(
    {
        "lat",
        "lon",
        "location",
        "timestamp",
        "speed",
        "bearing",
        "heading",
        "altitude",
        "accuracy",
        "hdop",
        "batt",
        "charge",
        "valid",
        "ignition",
        "odometer",
        "totalDistance",
        "driverUniqueId",
        "notificationToken",
    }
)


def _form_number(known: dict[str, str], key: str) -> float | None:
    value = known.get(key)
    return None if value is None else _number(value, key)


def _form_boolean(known: dict[str, str], key: str) -> bool | None:
    value = known.get(key)
    return None if value is None else _boolean(value, key)


def _decode_form(pairs: list[tuple[str, str]], token: str | None, now: datetime) -> Decoded:
    # One pass sorts the pairs (the last of a repeated key wins, as in Traccar); the known
    # fields are converted after it, each once.
    uid: str | None = None
    known: dict[str, str] = {}
    network: dict[str, list[str]] = {}
    attributes: dict[str, Attribute] = {}
    for key, value in pairs:
        if key in _FORM_KEYS:
            known[key] = value
        elif key == "id" or key == "deviceid":
            # Two different ids in one message: which one the route authenticated is a guess.
            if uid is not None and value != uid:
                raise DecodeError("ambiguous-id")
            uid = value
        elif key == "cell" or key == "wifi":
            network.setdefault(key, []).append(value)
        else:
            _put(attributes, key, _typed(value))
    uid = _device_uid(uid)
    # Several towers or access points in one message, each `mcc,mnc,lac,cid[,rssi]` or
    # `mac,rssi`: kept together, one per `;`.
    for key, values in network.items():
        _put(attributes, key, _string(";".join(values)))

    lat = lon = None
    location = known.get("location")
    if location is not None and "lat" not in known and "lon" not in known:
        parts = location.split(",")
        if len(parts) != 2:
            raise DecodeError("bad-coordinates")
        lat, lon = _coordinate(parts[0]), _coordinate(parts[1])
    else:
        if (raw_lat := known.get("lat")) is not None:
            lat = _coordinate(raw_lat)
        if (raw_lon := known.get("lon")) is not None:
            lon = _coordinate(raw_lon)
    flagged = _form_boolean(known, "valid")
    valid = _valid_pair(lat, lon) and flagged is not False

    raw_time = known.get("timestamp")
    if raw_time is None:
        fix_time, server_time = now, True
    else:
        fix_time, server_time = _time(raw_time), False
        _not_future(fix_time, now)

    speed = _form_number(known, "speed")
    course = _form_number(known, "bearing")
    heading = _form_number(known, "heading")
    odometer = _form_number(known, "odometer")
    if odometer is None:
        odometer = _form_number(known, "totalDistance")
    driver = known.get("driverUniqueId")
    if driver is not None and (len(driver) > MAX_ID_LENGTH or not driver.isprintable()):
        raise DecodeError("bad-value", "driverUniqueId")
    notification = known.get("notificationToken")
    if notification is not None:
        notification = _token(notification, "notificationToken")
    point = Point(
        device_uid=uid,
        fix_time=fix_time,
        lat=lat,
        lon=lon,
        valid=valid,
        server_time=server_time,
        speed_mps=None if speed is None or speed < 0 else speed * MPS_PER_KNOT,
        course_deg=_course(course if heading is None else heading),
        altitude_m=_form_number(known, "altitude"),
        accuracy_m=_nonnegative(_form_number(known, "accuracy")),
        hdop=_nonnegative(_form_number(known, "hdop")),
        battery_pct=_percent(_form_number(known, "batt")),
        charging=_form_boolean(known, "charge"),
        ignition=_form_boolean(known, "ignition"),
        odometer_m=_nonnegative(odometer),
        driver_unique_id=driver,
        attributes=attributes,
    )
    return Decoded(uid, (point,), token, notification)


# The JSON form: the background-geolocation plugin's location object.


def _json_number(container: dict[str, Any], key: str, field: str) -> float | None:
    value = container.get(key)
    if value is None:
        return None
    # bool is an int to Python; `true` is no number. orjson never yields NaN or infinity.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DecodeError("bad-value", field)
    return float(value)


def _json_boolean(container: dict[str, Any], key: str, field: str) -> bool | None:
    value = container.get(key)
    if value is None or isinstance(value, bool):
        return value
    raise DecodeError("bad-value", field)


def _json_scalar(value: object) -> Attribute | None:
    """A JSON value as an attribute; None for null, objects and arrays (not flattened)."""
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if -_INT64 <= value < _INT64 else float(value)
    if isinstance(value, float):
        return value
    return None


def _json_attributes(
    attributes: dict[str, Attribute], container: dict[str, Any], prefix: str, skip: frozenset[str]
) -> None:
    """A container's scalar values as attributes named `<prefix><key>`, one level of nested
    objects as `<prefix><key>_<sub>`; never replacing what the message's own fields set."""
    for key, value in container.items():
        if key in skip:
            continue
        if isinstance(value, dict):
            if not prefix:
                _json_attributes(attributes, value, f"{key}_", frozenset())
            continue
        scalar = _json_scalar(value)
        if scalar is not None and f"{prefix}{key}" not in attributes:
            _put(attributes, f"{prefix}{key}", scalar)


_ROOT_KEYS = frozenset({"device_id", "location", _TOKEN})
# `_` is Traccar Client's copy of the whole message as a query string: nothing new, not kept.
_LOCATION_KEYS = frozenset(
    {"timestamp", "coords", "battery", "activity", "extras", "is_moving", "odometer", "event", "_"}
)
_COORDS_KEYS = frozenset({"latitude", "longitude", "accuracy", "speed", "heading", "altitude"})


def _decode_json(body: bytes, token: str | None, now: datetime) -> Decoded:
    try:
        root = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise DecodeError("unparseable-body") from None
    if not isinstance(root, dict):
        raise DecodeError("unparseable-body")
    raw_uid = root.get("device_id")
    if isinstance(raw_uid, int) and not isinstance(raw_uid, bool):
        raw_uid = str(raw_uid)
    elif raw_uid is not None and not isinstance(raw_uid, str):
        raise DecodeError("bad-id")
    uid = _device_uid(raw_uid)
    body_token = root.get(_TOKEN)
    if body_token is not None:
        if not isinstance(body_token, str):
            raise DecodeError("bad-value", _TOKEN)
        if token is not None and body_token != token:
            raise DecodeError("ambiguous-token")
        token = _token(body_token, _TOKEN)
    location = root.get("location")
    if isinstance(location, list):
        # Traccar reads `location` as one object; the plugin's batch mode (a list) is not part
        # of the protocol its clients speak.
        raise DecodeError("unsupported-batch")
    if location is None:
        location = {}
    elif not isinstance(location, dict):
        raise DecodeError("bad-value", "location")
    return Decoded(uid, (_json_point(uid, root, location, now),), token)


def _json_object(container: dict[str, Any], key: str) -> dict[str, Any]:
    value = container.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise DecodeError("bad-value", f"location.{key}")
    return value


def _json_point(uid: str, root: dict[str, Any], location: dict[str, Any], now: datetime) -> Point:
    attributes: dict[str, Attribute] = {}

    raw_time = location.get("timestamp")
    fix_time: datetime | None
    if raw_time is None:
        fix_time = None
    elif isinstance(raw_time, str):
        fix_time = _time(raw_time)
    elif isinstance(raw_time, int | float) and not isinstance(raw_time, bool):
        try:
            fix_time = from_epoch(raw_time)
        except ValueError:
            raise DecodeError("bad-timestamp") from None
    else:
        raise DecodeError("bad-timestamp")

    coords = _json_object(location, "coords")
    try:
        lat = _json_number(coords, "latitude", "location.coords.latitude")
        lon = _json_number(coords, "longitude", "location.coords.longitude")
    except DecodeError:
        raise DecodeError("bad-coordinates") from None
    valid = _valid_pair(lat, lon)
    speed = _nonnegative(_json_number(coords, "speed", "location.coords.speed"))
    course = _course(_json_number(coords, "heading", "location.coords.heading"))
    accuracy = _nonnegative(_json_number(coords, "accuracy", "location.coords.accuracy"))
    altitude = _json_number(coords, "altitude", "location.coords.altitude")

    battery = _json_object(location, "battery")
    level = _json_number(battery, "level", "location.battery.level")
    # The plugin reports 0..1 and -1 when it does not know.
    battery_pct = level * 100.0 if level is not None and 0.0 <= level <= 1.0 else None
    charging = _json_boolean(battery, "is_charging", "location.battery.is_charging")

    odometer = _nonnegative(_json_number(location, "odometer", "location.odometer"))
    motion = _json_boolean(location, "is_moving", "location.is_moving")
    if motion is not None:
        attributes["motion"] = motion
    event = location.get("event")
    if isinstance(event, str):
        attributes["event"] = _string(event)
    activity = location.get("activity")
    if isinstance(activity, dict):
        kind = activity.get("type")
        if isinstance(kind, str):
            attributes["activity"] = _string(kind)
        _json_attributes(attributes, activity, "activity_", frozenset({"type"}))
    elif isinstance(activity, str):
        attributes["activity"] = _string(activity)
    _json_attributes(attributes, location, "", _LOCATION_KEYS)
    _json_attributes(attributes, coords, "", _COORDS_KEYS)
    _json_attributes(attributes, battery, "battery_", frozenset({"level", "is_charging"}))
    _json_attributes(attributes, _json_object(location, "extras"), "", frozenset())
    _json_attributes(attributes, root, "", _ROOT_KEYS)

    if fix_time is None:
        fix_time, server_time = now, True
    else:
        _not_future(fix_time, now)
        server_time = False
    return Point(
        device_uid=uid,
        fix_time=fix_time,
        lat=lat,
        lon=lon,
        valid=valid,
        server_time=server_time,
        speed_mps=speed,
        course_deg=course,
        altitude_m=altitude,
        accuracy_m=accuracy,
        battery_pct=battery_pct,
        charging=charging,
        odometer_m=odometer,
        attributes=attributes,
    )
