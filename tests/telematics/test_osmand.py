"""The OsmAnd decoder against the requests real clients send (OsmAnd, Traccar Client for Android
and iOS, its JSON form), each rule of the protocol, and fuzzing: whatever the bytes, a Point or
a DecodeError."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta, timezone
from urllib.parse import parse_qsl, quote, urlencode

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ctafleet.kernel.units import MPS_PER_KNOT
from ctafleet.telematics import osmand
from ctafleet.telematics.osmand import (
    MAX_ATTRIBUTES,
    MAX_FIELDS,
    MAX_KEY_LENGTH,
    MAX_PAYLOAD,
    MAX_STRING_LENGTH,
    Decoded,
    DecodeError,
    decode,
)
from ctafleet.telematics.points import Point

NOW = datetime(2025, 6, 15, 13, 46, 0, tzinfo=UTC)
FORM = "application/x-www-form-urlencoded"
JSON = "application/json"


def get(query: str, *, now: datetime = NOW) -> Decoded:
    return decode(method="GET", content_type=None, query=query.encode(), body=b"", now=now)


def post(
    body: bytes | str, content_type: str | None = FORM, *, query: str = "", now: datetime = NOW
) -> Decoded:
    data = body.encode() if isinstance(body, str) else body
    return decode(method="POST", content_type=content_type, query=query, body=data, now=now)


def only(decoded: Decoded) -> Point:
    assert len(decoded.points) == 1
    return decoded.points[0]


def refused(reason: str, query: str) -> DecodeError:
    with pytest.raises(DecodeError) as caught:
        get(query)
    assert caught.value.reason == reason, caught.value
    return caught.value


def refused_post(
    reason: str, body: bytes | str, content_type: str | None = FORM, *, query: str = ""
) -> DecodeError:
    with pytest.raises(DecodeError) as caught:
        post(body, content_type, query=query)
    assert caught.value.reason == reason, caught.value
    return caught.value


# Real requests, as the clients send them.


def test_traccar_client_android_query() -> None:
    decoded = get(
        "id=123456&timestamp=1609459200&lat=52.5&lon=13.4&speed=10.5&bearing=90&altitude=34"
        "&accuracy=5&batt=87.5&charge=true",
        now=datetime(2021, 1, 1, 0, 0, 30, tzinfo=UTC),
    )
    assert decoded.device_uid == "123456"
    assert decoded.token is None
    assert only(decoded) == Point(
        device_uid="123456",
        fix_time=datetime(2021, 1, 1, tzinfo=UTC),
        lat=52.5,
        lon=13.4,
        valid=True,
        server_time=False,
        speed_mps=pytest.approx(10.5 * 1852 / 3600),  # type: ignore[arg-type]
        course_deg=90.0,
        altitude_m=34.0,
        accuracy_m=5.0,
        battery_pct=87.5,
        charging=True,
        attributes={},
    )


def test_traccar_client_form_post() -> None:
    # Traccar Client 10 posts a form body to a bare URL.
    body = (
        "id=48241179&timestamp=2025-06-15T13%3A45%3A12.862Z&lat=37.4219983&lon=-122.084"
        "&speed=0.0&bearing=0.0&altitude=5.0&accuracy=5.0&batt=100.0&charge=false"
    )
    point = only(post(body))
    assert point.device_uid == "48241179"
    assert point.fix_time == datetime(2025, 6, 15, 13, 45, 12, 862000, tzinfo=UTC)
    assert (point.lat, point.lon) == (37.4219983, -122.084)
    assert point.speed_mps == 0.0
    assert point.course_deg == 0.0
    assert point.battery_pct == 100.0
    assert point.charging is False
    assert point.has_fix
    assert point.attributes == {}


def test_form_body_is_read_whatever_the_method_and_declared_type() -> None:
    body = b"id=7&lat=1.5&lon=2.5"
    for method in ("GET", "POST", "PUT"):
        for content_type in (FORM, None, "text/plain"):
            point = only(
                decode(method=method, content_type=content_type, query="", body=body, now=NOW)
            )
            assert (point.device_uid, point.lat, point.lon) == ("7", 1.5, 2.5)


def test_query_string_wins_over_the_body() -> None:
    decoded = post("id=body&lat=9&lon=9", query="id=query&lat=1&lon=2")
    assert decoded.device_uid == "query"
    assert (only(decoded).lat, only(decoded).lon) == (1.0, 2.0)


def test_osmand_app_queries() -> None:
    iso = only(
        get(
            "id=902064&lat=42.06288&lon=-88.23412&timestamp=2016-01-27T18%3A55%3A47Z&hdop=6.0"
            "&altitude=224.0&speed=0.0"
        )
    )
    assert iso.fix_time == datetime(2016, 1, 27, 18, 55, 47, tzinfo=UTC)
    assert iso.hdop == 6.0
    assert iso.altitude_m == 224.0
    spaced = only(
        get("lat=49.60688&lon=6.15788&timestamp=2014-06-04+09%3A10%3A11&altitude=384.7&id=3538")
    )
    assert spaced.fix_time == datetime(2014, 6, 4, 9, 10, 11, tzinfo=UTC)
    assert spaced.device_uid == "3538"


def test_deviceid_heading_and_location_parameters() -> None:
    point = only(get("lat=60.0&lon=30.0&speed=0.0&heading=45.5&vacc=0&hacc=0&deviceid=123456"))
    assert point.device_uid == "123456"
    assert point.course_deg == 45.5
    assert point.attributes == {"vacc": 0, "hacc": 0}
    located = only(get("id=123456&timestamp=1377177267&location=60.0,30.0"))
    assert (located.lat, located.lon) == (60.0, 30.0)


def test_vendor_parameters_become_typed_attributes() -> None:
    point = only(
        get(
            "id=123456789012345&timestamp=1504763810&lat=40.7232948571&lon=-74.0061408571"
            "&bearing=7.19889788244&speed=40&ignition=true&rpm=933&fuel=24.5&door=false"
            "&mode=eco&iccid=89445001021983048261&big=1e400&nan=NaN&caps=True"
        )
    )
    assert point.ignition is True
    assert point.attributes == {
        "rpm": 933,
        "fuel": 24.5,
        "door": False,
        "mode": "eco",
        # An identifier longer than 18 digits stays a string: a float would lose digits.
        "iccid": "89445001021983048261",
        "big": "1e400",
        "nan": "NaN",
        "caps": "True",
    }
    assert type(point.attributes["rpm"]) is int
    assert type(point.attributes["door"]) is bool


def test_cell_and_wifi_are_kept_as_strings() -> None:
    point = only(
        get(
            "id=123456&timestamp=1377177267&cell=257,02,16,2224&cell=257,02,16,2223,-90"
            "&wifi=00-14-22-01-23-45,-80&wifi=00-1C-B3-09-85-15,-70"
        )
    )
    assert point.attributes == {
        "cell": "257,02,16,2224;257,02,16,2223,-90",
        "wifi": "00-14-22-01-23-45,-80;00-1C-B3-09-85-15,-70",
    }
    assert point.lat is None


def test_driver_valid_and_ignition_fields() -> None:
    point = only(get("id=1&lat=1&lon=1&driverUniqueId=A1B2C3&valid=0&ignition=false"))
    assert point.driver_unique_id == "A1B2C3"
    assert point.valid is False
    assert point.ignition is False
    assert not point.has_fix
    for flag, expected in (("true", True), ("1", True), ("false", False), ("FALSE", False)):
        assert only(get(f"id=1&lat=1&lon=1&valid={flag}")).valid is expected
    refused("bad-value", "id=1&valid=maybe")
    assert refused("bad-value", "id=1&charge=yes").field == "charge"


def test_odometer_and_total_distance_are_the_devices_own_odometer() -> None:
    assert only(get("id=1&odometer=12345.5")).odometer_m == 12345.5
    assert only(get("id=1&totalDistance=777")).odometer_m == 777.0
    assert only(get("id=1&totalDistance=777&odometer=5")).odometer_m == 5.0
    # `distance` is Traccar's distance since the last fix, not a total: an attribute.
    point = only(get("id=1&distance=20.5"))
    assert point.odometer_m is None
    assert point.attributes == {"distance": 20.5}


# Traccar Client 9: the background-geolocation plugin's JSON.

ANDROID_JSON = (
    b'{"location":{"timestamp":"2025-06-15T13:45:12.862Z","coords":{"latitude":37.4219983,'
    b'"longitude":-122.084,"accuracy":5,"speed":0,"heading":-1,"altitude":5},"is_moving":false,'
    b'"odometer":0,"event":"motionchange","battery":{"level":1,"is_charging":false},'
    b'"activity":{"type":"still"},"extras":{},'
    b'"_":"&id=48241179&lat=37.4219983&lon=-122.084&timestamp=2025-06-15T13:45:12.862Z&"},'
    b'"device_id":"48241179"}'
)
IOS_JSON = (
    b'{"location":{"extras":{},"mock":true,"coords":{"speed_accuracy":-1,"speed":-1,'
    b'"longitude":-122.406417,"ellipsoidal_altitude":0,"floor":null,"heading_accuracy":-1,'
    b'"latitude":37.785834000000001,"accuracy":5,"altitude_accuracy":-1,"altitude":0,'
    b'"heading":-1},"is_moving":false,"age":188,"odometer":0,'
    b'"uuid":"2FB04C65-99CF-42AB-8DD3-EBCB4B108BF8","event":"motionchange",'
    b'"battery":{"level":-1,"is_charging":false},"activity":{"type":"unknown","confidence":100},'
    b'"timestamp":"2025-05-09T04:11:30.579Z"},"device_id":"658765"}'
)


def test_traccar_client_json_android() -> None:
    decoded = post(ANDROID_JSON, JSON)
    assert decoded.device_uid == "48241179"
    assert only(decoded) == Point(
        device_uid="48241179",
        fix_time=datetime(2025, 6, 15, 13, 45, 12, 862000, tzinfo=UTC),
        lat=37.4219983,
        lon=-122.084,
        speed_mps=0.0,
        course_deg=None,  # -1: unknown
        altitude_m=5.0,
        accuracy_m=5.0,
        battery_pct=100.0,
        charging=False,
        odometer_m=0.0,
        # `_` repeats the message as a query string: not kept.
        attributes={"motion": False, "event": "motionchange", "activity": "still"},
    )


def test_traccar_client_json_ios() -> None:
    point = only(post(IOS_JSON, "application/json; charset=utf-8"))
    assert point.device_uid == "658765"
    assert point.fix_time == datetime(2025, 5, 9, 4, 11, 30, 579000, tzinfo=UTC)
    assert (point.lat, point.lon) == (37.785834, -122.406417)
    assert point.speed_mps is None
    assert point.course_deg is None
    assert point.battery_pct is None  # level -1: unknown
    assert point.charging is False
    assert point.attributes == {
        "motion": False,
        "event": "motionchange",
        "activity": "unknown",
        "activity_confidence": 100,
        "mock": True,
        "age": 188,
        "uuid": "2FB04C65-99CF-42AB-8DD3-EBCB4B108BF8",
        "speed_accuracy": -1,
        "ellipsoidal_altitude": 0,
        "heading_accuracy": -1,
        "altitude_accuracy": -1,
    }


def test_json_speed_is_metres_per_second_and_battery_a_fraction() -> None:
    body = orjson.dumps(
        {
            "device_id": 8737767034,
            "location": {
                "timestamp": "2021-07-21T08:06:34.444Z",
                "coords": {"latitude": -6.1148096, "longitude": 106.6837015, "speed": 18.67},
                "battery": {"is_charging": True, "level": 0.79},
                "extras": {"alarm": "sos", "trip": 12, "nested": {"ignored": 1}},
                "geofence": {"identifier": "Depot", "action": "ENTER"},
            },
        }
    )
    point = only(post(body, JSON))
    assert point.device_uid == "8737767034"  # a number is taken as its digits
    assert point.speed_mps == 18.67
    assert point.battery_pct == pytest.approx(79.0)
    assert point.charging is True
    assert point.attributes == {
        "alarm": "sos",
        "trip": 12,
        "nested_ignored": 1,
        "geofence_identifier": "Depot",
        "geofence_action": "ENTER",
    }


def test_json_extras_never_replace_the_messages_own_fields() -> None:
    body = orjson.dumps(
        {
            "device_id": "1",
            "location": {"event": "heartbeat", "extras": {"event": "forged", "motion": "x"}},
        }
    )
    assert only(post(body, JSON)).attributes == {"event": "heartbeat", "motion": "x"}


def test_json_without_location_or_time_is_a_heartbeat() -> None:
    point = only(post(b'{"device_id":"abc"}', JSON))
    assert (point.lat, point.lon) == (None, None)
    assert point.server_time is True
    assert point.fix_time == NOW
    ios_sparse = only(
        post(b'{"device_id":"abc","location":{"coords":{"latitude":1,"longitude":2}}}', JSON)
    )
    assert (ios_sparse.lat, ios_sparse.lon, ios_sparse.server_time) == (1.0, 2.0, True)
    assert ios_sparse.accuracy_m is None


def test_json_location_list_is_refused_like_traccar() -> None:
    # Traccar reads `location` as one object; a list (the plugin's batch mode) is not accepted.
    body = orjson.dumps({"device_id": "1", "location": [{"coords": {"latitude": 1}}]})
    refused_post("unsupported-batch", body, JSON)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "unparseable-body"),
        (b"{", "unparseable-body"),
        (b'["device_id"]', "unparseable-body"),
        (b'{"device_id": "1", "location": {"coords": {"latitude": NaN}}}', "unparseable-body"),
        (b"{}", "missing-id"),
        (b'{"device_id": ""}', "missing-id"),
        (b'{"device_id": true}', "bad-id"),
        (b'{"device_id": {"id": 1}}', "bad-id"),
        (b'{"device_id": "1", "location": 5}', "bad-value"),
        (b'{"device_id": "1", "location": {"coords": []}}', "bad-value"),
        (
            b'{"device_id": "1", "location": {"coords": {"latitude": "1", "longitude": 2}}}',
            "bad-coordinates",
        ),
        (b'{"device_id": "1", "location": {"coords": {"latitude": 1}}}', "bad-coordinates"),
        (
            b'{"device_id": "1", "location": {"coords": {"latitude": 91, "longitude": 0}}}',
            "bad-coordinates",
        ),
        (b'{"device_id": "1", "location": {"coords": {"speed": true}}}', "bad-value"),
        (b'{"device_id": "1", "location": {"timestamp": "yesterday"}}', "bad-timestamp"),
        (b'{"device_id": "1", "location": {"timestamp": ["2025"]}}', "bad-timestamp"),
        (b'{"device_id": "1", "location": {"timestamp": 1e300}}', "bad-timestamp"),
        (b'{"device_id": "1", "location": {"is_moving": "yes"}}', "bad-value"),
        (b'{"device_id": "1", "location": {"battery": {"level": "full"}}}', "bad-value"),
        (b'{"device_id": "1", "location": {"timestamp": "2025-06-15T14:00:00Z"}}', "future-fix"),
    ],
)
def test_json_refusals(body: bytes, reason: str) -> None:
    refused_post(reason, body, JSON)


# Time.


@pytest.mark.parametrize(
    ("timestamp", "expected"),
    [
        ("1609459200", datetime(2021, 1, 1, tzinfo=UTC)),  # epoch seconds
        ("1609459200123", datetime(2021, 1, 1, 0, 0, 0, 123000, tzinfo=UTC)),  # milliseconds
        ("1609459200.5", datetime(2021, 1, 1, 0, 0, 0, 500000, tzinfo=UTC)),
        ("2147483646", datetime(2038, 1, 19, 3, 14, 6, tzinfo=UTC)),  # the last second count
        ("2147483647", datetime(1970, 1, 25, 20, 31, 23, 647000, tzinfo=UTC)),  # milliseconds
        ("0", datetime(1970, 1, 1, tzinfo=UTC)),
        ("2021-01-01T00:00:00Z", datetime(2021, 1, 1, tzinfo=UTC)),
        ("2021-01-01T02:00:00+02:00", datetime(2021, 1, 1, tzinfo=UTC)),
        ("2020-12-31T19:00:00.250-05:00", datetime(2021, 1, 1, 0, 0, 0, 250000, tzinfo=UTC)),
        ("2021-01-01 00:00:00", datetime(2021, 1, 1, tzinfo=UTC)),  # UTC by the protocol
        ("2021-01-01 00:00:00.5", datetime(2021, 1, 1, 0, 0, 0, 500000, tzinfo=UTC)),
    ],
)
def test_timestamp_formats(timestamp: str, expected: datetime) -> None:
    later = datetime(2040, 1, 1, tzinfo=UTC)
    point = only(get(f"id=1&lat=1&lon=1&timestamp={quote(timestamp)}", now=later))
    assert point.fix_time == expected
    assert point.fix_time.tzinfo is UTC
    assert point.server_time is False


@pytest.mark.parametrize(
    "timestamp",
    [
        "2021-01-01T00:00:00",  # an ISO time without an offset could be any zone's
        "2021-01-01",
        "2021-01-01 00:00",
        "yesterday",
        "1e9",
        "0x5FEE6600",
        "0001-01-01T00:00:00+01:00",  # before the calendar starts, once in UTC
        "99999999999999999999",  # milliseconds far past year 9999
        "-99999999999",  # seconds before year 1
        "1" * 5000,
        "2021-02-30T00:00:00Z",
    ],
)
def test_bad_timestamps_are_refused(timestamp: str) -> None:
    refused("bad-timestamp", f"id=1&timestamp={quote(timestamp)}")


def test_a_fix_from_more_than_five_minutes_ahead_is_refused() -> None:
    ahead = int((NOW + timedelta(minutes=4, seconds=59)).timestamp())
    assert only(get(f"id=1&lat=1&lon=1&timestamp={ahead}")).fix_time > NOW
    too_far = int((NOW + timedelta(minutes=5, seconds=1)).timestamp())
    refused("future-fix", f"id=1&lat=1&lon=1&timestamp={too_far}")


def test_now_in_another_zone_or_naive_is_taken_as_utc() -> None:
    local = NOW.astimezone(timezone(timedelta(hours=2)))
    assert only(get("id=1", now=local)).fix_time.tzinfo is UTC
    assert only(get("id=1", now=local)).fix_time == NOW
    assert only(get("id=1", now=NOW.replace(tzinfo=None))).fix_time == NOW


# Units and special values.


def test_speed_in_knots_becomes_metres_per_second() -> None:
    assert only(get("id=1&speed=10")).speed_mps == pytest.approx(5.144444, abs=1e-6)
    assert only(get("id=1&speed=1")).speed_mps == pytest.approx(MPS_PER_KNOT)
    assert only(get("id=1&speed=0")).speed_mps == 0.0
    assert only(get("id=1&speed=-1")).speed_mps is None  # unknown


def test_course_accuracy_and_battery_out_of_range_are_unknown() -> None:
    point = only(get("id=1&bearing=-1&accuracy=-1&hdop=-1&batt=43628.0"))
    assert (point.course_deg, point.accuracy_m, point.hdop, point.battery_pct) == (None,) * 4
    assert only(get("id=1&bearing=360")).course_deg == 0.0
    assert only(get("id=1&bearing=370.5")).course_deg == 10.5


def test_zero_zero_is_no_fix_but_keeps_the_rest() -> None:
    point = only(get("id=1&timestamp=1749995000&lat=0&lon=0&batt=50&speed=3&rpm=800"))
    assert point.valid is False
    assert not point.has_fix
    assert (point.lat, point.lon) == (0.0, 0.0)
    assert point.battery_pct == 50.0
    assert point.speed_mps == pytest.approx(3 * MPS_PER_KNOT)
    assert point.attributes == {"rpm": 800}
    json_point = only(
        post(b'{"device_id":"1","location":{"coords":{"latitude":0,"longitude":0}}}', JSON)
    )
    assert json_point.valid is False


def test_heartbeat_without_coordinates_or_time() -> None:
    decoded = get("id=123456")
    point = only(decoded)
    assert decoded.device_uid == "123456"
    assert (point.lat, point.lon) == (None, None)
    assert point.valid is True
    assert not point.has_fix
    assert point.server_time is True
    assert point.fix_time == NOW


def test_push_token_upload() -> None:
    push = "dGhpcyBpcyBub3QgYSByZWFsIHRva2Vu:APA91bHun4MxP5egoKMwt2KZFBaFUH"
    decoded = get(f"id=123456&notificationToken={quote(push)}")
    assert decoded.notification_token == push
    assert only(decoded).lat is None
    assert only(decoded).attributes == {}


# The credential.


def test_token_parameter_is_the_credential_never_an_attribute() -> None:
    decoded = get("id=1&lat=1&lon=1&token=ctd_s3cret&rpm=10")
    assert decoded.token == "ctd_s3cret"
    assert only(decoded).attributes == {"rpm": 10}


def test_token_in_the_query_with_the_data_in_a_form_body() -> None:
    decoded = post("id=1&lat=1&lon=2", query="token=ctd_s3cret")
    assert decoded.token == "ctd_s3cret"
    assert (decoded.device_uid, only(decoded).lat) == ("1", 1.0)
    from_body = post("id=1&token=ctd_body")
    assert from_body.token == "ctd_body"
    assert only(from_body).attributes == {}


def test_token_with_json() -> None:
    assert post(b'{"device_id":"1"}', JSON, query="token=ctd_q").token == "ctd_q"
    in_body = post(b'{"device_id":"1","token":"ctd_b"}', JSON)
    assert in_body.token == "ctd_b"
    assert only(in_body).attributes == {}


def test_two_different_tokens_are_refused() -> None:
    refused("ambiguous-token", "id=1&token=a&token=b")
    refused_post("ambiguous-token", "id=1&token=b", query="token=a")
    refused_post("ambiguous-token", b'{"device_id":"1","token":"b"}', JSON, query="token=a")
    assert get("id=1&token=a&token=a").token == "a"


# Ids and coordinates.


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("lat=1&lon=2", "missing-id"),
        ("id=&lat=1&lon=2", "missing-id"),
        ("", "missing-id"),
        (f"id={'9' * 65}", "bad-id"),
        ("id=12%0A34", "bad-id"),
        ("id=12%0034", "bad-id"),
        ("id=%1B%5B31m", "bad-id"),
        ("id=1&deviceid=2", "ambiguous-id"),
        ("id=1&lat=91&lon=0", "bad-coordinates"),
        ("id=1&lat=-90.0001&lon=0", "bad-coordinates"),
        ("id=1&lat=0&lon=180.5", "bad-coordinates"),
        ("id=1&lat=nan&lon=0", "bad-coordinates"),
        ("id=1&lat=1&lon=inf", "bad-coordinates"),
        ("id=1&lat=north&lon=0", "bad-coordinates"),
        ("id=1&lat=1", "bad-coordinates"),
        ("id=1&location=1,2,3", "bad-coordinates"),
        ("id=1&location=1", "bad-coordinates"),
        ("id=1&speed=fast", "bad-value"),
        ("id=1&altitude=inf", "bad-value"),
        ("id=1&batt=NaN", "bad-value"),
        (f"id=1&driverUniqueId={'d' * 65}", "bad-value"),
        (f"id=1&token={'t' * 257}", "bad-value"),
    ],
)
def test_query_refusals(query: str, reason: str) -> None:
    refused(reason, query)


def test_ids_at_the_limits() -> None:
    assert get(f"id={'9' * 64}").device_uid == "9" * 64
    assert get("id=1&deviceid=1").device_uid == "1"
    assert get("id=%C3%A9t%C3%A9+42").device_uid == "été 42"
    assert only(get("id=1&lat=-90&lon=180")).has_fix
    assert only(get("id=1&lat=90&lon=-180")).has_fix


# Bounds on what a device may store.


def test_attributes_are_bounded() -> None:
    many = "&".join(f"k{i}={i}" for i in range(100))
    assert len(only(get(f"id=1&{many}")).attributes) == MAX_ATTRIBUTES
    long_key = "k" * (MAX_KEY_LENGTH + 1)
    assert only(get(f"id=1&{long_key}=1&{'k' * MAX_KEY_LENGTH}=2")).attributes == {
        "k" * MAX_KEY_LENGTH: 2
    }
    value = only(get(f"id=1&note={'x' * 1000}")).attributes["note"]
    assert value == "x" * MAX_STRING_LENGTH
    assert only(get("id=1&note=a%00b")).attributes == {"note": "a\ufffdb"}
    assert only(get("id=1&bad%0Akey=1")).attributes == {}


def test_json_attributes_are_bounded() -> None:
    extras = {f"k{i}": "v" * 300 for i in range(200)}
    body = orjson.dumps({"device_id": "1", "location": {"extras": extras}})
    attributes = only(post(body, JSON)).attributes
    assert len(attributes) == MAX_ATTRIBUTES
    assert {len(str(v)) for v in attributes.values()} == {MAX_STRING_LENGTH}


def test_oversized_requests_are_refused_before_parsing() -> None:
    refused_post("too-large", "id=1&x=" + "y" * MAX_PAYLOAD)
    refused("too-many-fields", "id=1" + "&a=1" * MAX_FIELDS)


def test_query_as_bytes_or_str_decodes_alike() -> None:
    query = "id=%C3%A9&lat=1&lon=2&note=caf%C3%A9"
    as_bytes = decode(method="GET", content_type=None, query=query.encode(), body=b"", now=NOW)
    as_str = decode(method="GET", content_type=None, query=query, body=b"", now=NOW)
    assert as_bytes == as_str
    assert only(as_str).attributes == {"note": "café"}


def test_json_is_chosen_by_content_type_alone() -> None:
    for content_type in ("application/json", "Application/JSON", "application/json;charset=UTF-8"):
        assert post(ANDROID_JSON, content_type).device_uid == "48241179"
    # The same bytes under any other type are a form, which names no id.
    refused_post("missing-id", IOS_JSON, "text/plain")


# Fuzzing: whatever arrives, a Decoded or a DecodeError.

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
content_types = st.one_of(
    st.none(),
    st.sampled_from([JSON, FORM, "application/json; charset=utf-8", "text/plain", ""]),
    st.text(max_size=40),
)
form_keys = st.sampled_from(
    sorted(osmand._FORM_KEYS | {"id", "deviceid", "cell", "wifi", "token", "rpm", "distance"})
)
form_values = st.one_of(
    st.text(max_size=30),
    st.from_regex(r"-?[0-9]{1,25}(\.[0-9]{0,12})?([eE][+-]?[0-9]{1,4})?", fullmatch=True),
    st.sampled_from(["nan", "inf", "-inf", "true", "false", "0", "1", "0,0", "91,181", "1e400"]),
    st.datetimes(timezones=st.none() | st.timezones()).map(lambda d: d.isoformat()),
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
location_keys = st.sampled_from(
    [
        "timestamp",
        "coords",
        "battery",
        "activity",
        "extras",
        "is_moving",
        "odometer",
        "event",
        "latitude",
        "longitude",
        "speed",
        "heading",
        "accuracy",
        "altitude",
        "level",
        "is_charging",
        "type",
        "uuid",
    ]
)


REASONS = {
    "missing-id",
    "bad-id",
    "ambiguous-id",
    "ambiguous-token",
    "unparseable-body",
    "unsupported-batch",
    "bad-timestamp",
    "future-fix",
    "bad-coordinates",
    "bad-value",
    "too-large",
    "too-many-fields",
}


def assert_decodes_or_refuses(**request: object) -> None:
    try:
        decoded = decode(**request)  # type: ignore[arg-type]
    except DecodeError as error:
        reason = error.reason
        assert reason in REASONS
        return
    for point in decoded.points:
        assert point.device_uid == decoded.device_uid
        assert point.fix_time.tzinfo is UTC
        assert point.fix_time <= NOW + osmand.FUTURE_TOLERANCE
        if point.lat is not None:
            assert point.lon is not None
            assert -90 <= point.lat <= 90
            assert -180 <= point.lon <= 180
        assert len(point.attributes) <= MAX_ATTRIBUTES
        assert "token" not in point.attributes
        for key, value in point.attributes.items():
            assert len(key) <= MAX_KEY_LENGTH
            if isinstance(value, str):
                assert len(value) <= MAX_STRING_LENGTH
                assert "\x00" not in value
            if isinstance(value, float):
                assert math.isfinite(value)


@FUZZ
@given(
    method=st.text(max_size=10),
    content_type=content_types,
    query=st.binary(max_size=300) | st.text(max_size=300),
    body=st.binary(max_size=300),
)
def test_fuzz_arbitrary_bytes(
    method: str, content_type: str | None, query: bytes | str, body: bytes
) -> None:
    assert_decodes_or_refuses(
        method=method, content_type=content_type, query=query, body=body, now=NOW
    )


@FUZZ
@given(st.lists(st.tuples(form_keys, form_values), max_size=12), st.booleans())
def test_fuzz_form_fields(pairs: list[tuple[str, str]], in_body: bool) -> None:
    encoded = urlencode(pairs)
    assert_decodes_or_refuses(
        method="POST",
        content_type=FORM,
        query="" if in_body else encoded,
        body=encoded.encode() if in_body else b"",
        now=NOW,
    )


@FUZZ
@given(
    st.dictionaries(location_keys, json_values, max_size=8),
    st.dictionaries(location_keys, json_values, max_size=6),
    json_values,
)
def test_fuzz_json_structure(
    location: dict[str, object], coords: dict[str, object], uid: object
) -> None:
    if location.get("coords") is not None:
        location["coords"] = coords
    # The standard library writes integers of any size; orjson reads the big ones as floats.
    body = json.dumps({"device_id": uid, "location": location}, allow_nan=False).encode()
    assert_decodes_or_refuses(method="POST", content_type=JSON, query=b"", body=body, now=NOW)


# Round trip: any valid message gives back exactly its values.

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@settings(max_examples=200, deadline=None)
@given(
    uid=st.text(
        st.characters(codec="utf-8", categories=["L", "N", "P", "S"]), min_size=1, max_size=64
    ),
    lat=st.floats(-90, 90),
    lon=st.floats(-180, 180),
    when=st.datetimes(
        min_value=datetime(1970, 1, 1), max_value=datetime(2038, 1, 19), timezones=st.just(UTC)
    ),
    time_format=st.sampled_from(["seconds", "millis", "iso", "spaced"]),
    knots=st.none() | st.floats(0, 500),
    course=st.none() | st.floats(0, 359.99),
    altitude=st.none() | st.floats(-500, 9000),
    accuracy=st.none() | st.floats(0, 10000),
    battery=st.none() | st.floats(0, 100),
    charging=st.none() | st.booleans(),
    extra=st.none() | st.integers(-(10**18) + 1, 10**18 - 1),
)
def test_round_trip(
    uid: str,
    lat: float,
    lon: float,
    when: datetime,
    time_format: str,
    knots: float | None,
    course: float | None,
    altitude: float | None,
    accuracy: float | None,
    battery: float | None,
    charging: bool | None,
    extra: int | None,
) -> None:
    when = when.replace(microsecond=0) if time_format in ("seconds", "spaced") else when
    if time_format == "millis":
        when = when.replace(microsecond=when.microsecond // 1000 * 1000)
    stamp = {
        "seconds": str(int(when.timestamp())),
        # In integers: a float product loses the last millisecond now and then.
        "millis": str(millis)
        if (millis := (when - EPOCH) // timedelta(milliseconds=1)) >= 2147483647
        else None,
        "iso": when.isoformat(),
        "spaced": when.strftime("%Y-%m-%d %H:%M:%S"),
    }[time_format]
    fields: list[tuple[str, object]] = [("id", uid), ("lat", lat), ("lon", lon)]
    if stamp is not None:
        fields.append(("timestamp", stamp))
    for key, value in (
        ("speed", knots),
        ("bearing", course),
        ("altitude", altitude),
        ("accuracy", accuracy),
        ("batt", battery),
        ("charge", None if charging is None else str(charging).lower()),
        ("rpm", extra),
    ):
        if value is not None:
            fields.append((key, value))
    decoded = get(
        urlencode([(k, repr(v) if isinstance(v, float) else v) for k, v in fields]),
        now=datetime(2038, 2, 1, tzinfo=UTC),
    )
    point = only(decoded)
    assert decoded.device_uid == uid
    assert (point.lat, point.lon) == (lat, lon)
    assert point.valid is (lat != 0 or lon != 0)
    if stamp is not None:
        assert point.fix_time == when
        assert point.server_time is False
    assert point.speed_mps == (None if knots is None else knots * MPS_PER_KNOT)
    assert point.course_deg == course
    assert point.altitude_m == altitude
    assert point.accuracy_m == accuracy
    assert point.battery_pct == battery
    assert point.charging is charging
    assert point.attributes == ({} if extra is None else {"rpm": extra})


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from("ab=&%+2F0x é"), max_size=40))
def test_pair_splitting_agrees_with_parse_qsl(text: str) -> None:
    assert osmand._pairs(text) == parse_qsl(text)
