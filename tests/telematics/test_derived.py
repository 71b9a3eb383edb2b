"""Derived data through the pipeline: a device drives through the batch API and the worker, and
trips, stops, events, the derive state and the vehicle's meters come out, exactly once, and the
same whatever order the points arrive in."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import select

from ctafleet.telematics.derive import Event, Rules
from ctafleet.telematics.derive.rules import DefaultRules
from ctafleet.telematics.derived import DeriveStage
from ctafleet.telematics.models import DeviceDeriveState, StopRow, TelemetryEvent, TripRow
from ctafleet.telematics.points import Point
from tests.kit.app import Api, TenantUsers
from tests.kit.factories import new_vehicle
from tests.kit.problems import assert_problem
from tests.telematics.derive.kit import Drive
from tests.telematics.ingest.kit import after_commit_spy, device, drain

pytestmark = pytest.mark.asyncio

URL = "/api/v1/telemetry"
LIMIT_MPS = 25.0


def _iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def batch(points: Sequence[Point]) -> list[dict[str, Any]]:
    """The JSON batch form of a track's points."""
    out = []
    for p in points:
        item: dict[str, Any] = {"time": _iso(p.fix_time), "lat": p.lat, "lon": p.lon}
        for key, value in (
            ("speed", p.speed_mps),
            ("course", p.course_deg),
            ("accuracy", p.accuracy_m),
            ("ignition", p.ignition),
        ):
            if value is not None:
                item[key] = value
        out.append(item)
    return out


@dataclass
class Day:
    track: Drive
    # Where trip 1's stop is 7 minutes old (its checkpoint lies before) and where trip 2 is
    # half-way, as indexes of the points; the distance each trip really covered.
    in_stop: int
    half: int
    trip_m: tuple[float, float]


def day(api: Api) -> Day:
    """Two trips: 5 minutes at 20 m/s with a minute at 30 (above the limit), a 10-minute stop,
    4 more minutes at 20 m/s, and a stop."""
    d = Drive(lat=41.88, lon=-87.63, t=api.clock.now() - timedelta(hours=3))
    d.park(seconds=120, every_s=30)
    d.drive(seconds=120, speed=20.0, bearing=90.0, every_s=5)
    d.drive(seconds=60, speed=30.0, every_s=5)
    d.drive(seconds=120, speed=20.0, every_s=5)
    d.park(seconds=420, every_s=30)
    first_m = d.truth_m
    in_stop = len(d.points)
    d.park(seconds=180, every_s=30)
    d.drive(seconds=120, speed=20.0, bearing=0.0, every_s=5)
    half = len(d.points)
    d.drive(seconds=120, speed=20.0, every_s=5)
    d.park(seconds=600, every_s=30)
    return Day(d, in_stop, half, (first_m, d.truth_m - first_m))


@pytest.fixture
def stage(api: Api) -> DeriveStage:
    worker = api.app.state.ctafleet.telemetry.worker
    return next(s for s in worker.in_batch if isinstance(s, DeriveStage))


@pytest_asyncio.fixture
async def fleet(api: Api, stage: DeriveStage) -> AsyncIterator[TenantUsers]:
    """A tenant whose vehicles have a speed limit (the rules hook), and which hears what the
    after-commit stages are handed."""
    t = await api.tenant(roles=["admin"])
    before = stage.rules_for

    class Limited(DefaultRules):
        def __call__(self, tenant_id: uuid.UUID, vehicle_id: uuid.UUID | None) -> Rules:
            if tenant_id == t.id:
                return Rules(speed_limit_mps=LIMIT_MPS)
            return before(tenant_id, vehicle_id)

    stage.rules_for = Limited()
    try:
        yield t
    finally:
        stage.rules_for = before


@pytest.fixture
def published(api: Api) -> Iterator[list[Event]]:
    """The events handed to the after-commit stages (live feed, notifications)."""
    seen: list[Event] = []
    with after_commit_spy(api, lambda r: seen.extend(e for ev in r.events.values() for e in ev)):
        yield seen


async def send(api: Api, credential: str, points: Sequence[Point]) -> None:
    r = await api.client.post(
        URL, json={"points": batch(points)}, headers={"Authorization": f"Bearer {credential}"}
    )
    assert r.status_code == 202, r.text
    assert r.json()["rejected"] == []
    await drain(api)


async def derived(api: Api, device_id: str, uid: str) -> dict[str, Any]:
    """What is stored for the device, with its identity taken out (to compare devices)."""
    dev = uuid.UUID(device_id)
    async with api.db.system_session() as session:
        trips = list(
            await session.scalars(
                select(TripRow).where(TripRow.device_id == dev).order_by(TripRow.start_time)
            )
        )
        stops = list(
            await session.scalars(
                select(StopRow).where(StopRow.device_id == dev).order_by(StopRow.start_time)
            )
        )
        events = list(
            await session.scalars(
                select(TelemetryEvent)
                .where(TelemetryEvent.device_id == dev)
                .order_by(TelemetryEvent.time, TelemetryEvent.key)
            )
        )
        state = await session.get(DeviceDeriveState, dev)
    skip = {"id", "device_id", "vehicle_id", "tenant_id", "state_after"}

    def plain(row: Any) -> dict[str, Any]:
        names = [column.key for column in row.__table__.columns]
        return {c: getattr(row, c) for c in names if c not in skip}

    return {
        "trips": [plain(r) for r in trips],
        "stops": [plain(r) for r in stops],
        "events": [{**plain(e), "key": e.key.replace(uid, "UID")} for e in events],
        "state": None if state is None else {**state.state, "device_uid": "UID"},
    }


async def _vehicle(api: Api, t: TenantUsers, vehicle_id: str) -> dict[str, Any]:
    r = await api.client.get(f"/api/v1/vehicles/{vehicle_id}", headers=t.headers())
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


async def test_a_drive_makes_trips_events_and_moves_the_odometer_once(
    api: Api, fleet: TenantUsers, published: list[Event]
) -> None:
    vehicle = await new_vehicle(api, fleet, odometer_m=1000)
    dev = await device(api, fleet, vehicle_id=vehicle["id"])
    today = day(api)
    track = today.track
    await send(api, dev["credential"], track.points)

    got = await derived(api, dev["id"], dev["unique_id"])
    assert len(got["trips"]) == 2
    first, second = got["trips"]
    # What was driven, give or take GPS chords.
    assert first["distance_m"] == pytest.approx(today.trip_m[0], rel=0.01)
    assert second["distance_m"] == pytest.approx(today.trip_m[1], rel=0.01)
    assert first["max_speed_mps"] == pytest.approx(30.0)
    assert first["end_time"] < second["start_time"]
    assert len(got["stops"]) == 2  # before each trip
    overspeeds = [e for e in got["events"] if e["type"] == "overspeed"]
    assert len(overspeeds) == 1
    assert overspeeds[0]["value"] == pytest.approx(30.0)
    assert overspeeds[0]["limit"] == LIMIT_MPS
    assert overspeeds[0]["duration_s"] >= 60
    # The vehicle's odometer moved by what the device drove (whole metres), its ETag did not.
    after = await _vehicle(api, fleet, vehicle["id"])
    assert after["odometer_m"] == 1000 + round(got["state"]["odometer_m"])
    assert after["odometer_m"] - 1000 == pytest.approx(track.truth_m, rel=0.01)
    assert after["version"] == vehicle["version"]
    assert [e.type for e in published] == [e["type"] for e in got["events"]]

    # The same batch again: nothing new is stored, so nothing is derived or passed on twice.
    published.clear()
    await send(api, dev["credential"], track.points)
    assert await derived(api, dev["id"], dev["unique_id"]) == got
    assert (await _vehicle(api, fleet, vehicle["id"]))["odometer_m"] == after["odometer_m"]
    assert published == []


async def test_late_points_end_as_if_they_had_come_in_order(
    api: Api, fleet: TenantUsers, published: list[Event]
) -> None:
    today = day(api)
    points, in_stop, half = today.track.points, today.in_stop, today.half
    devices = {}
    for name in ("in_order", "halves_reversed", "middle_last"):
        vehicle = await new_vehicle(api, fleet, odometer_m=0)
        devices[name] = (await device(api, fleet, vehicle_id=vehicle["id"]), vehicle)

    def uid_of(name: str) -> list[Point]:
        uid = devices[name][0]["unique_id"]
        return [Point(**{**_fields(p), "device_uid": uid}) for p in points]

    await send(api, devices["in_order"][0]["credential"], uid_of("in_order")[:in_stop])
    await send(api, devices["in_order"][0]["credential"], uid_of("in_order")[in_stop:])
    # The second half first (no checkpoint before the first half: derived again from the
    # start), then the first half.
    mine = uid_of("halves_reversed")
    await send(api, devices["halves_reversed"][0]["credential"], mine[half:])
    await send(api, devices["halves_reversed"][0]["credential"], mine[:half])
    # The start, the end, then the middle: derived again from the first trip's checkpoint.
    mine = uid_of("middle_last")
    await send(api, devices["middle_last"][0]["credential"], mine[:in_stop])
    await send(api, devices["middle_last"][0]["credential"], mine[half:])
    await send(api, devices["middle_last"][0]["credential"], mine[in_stop:half])

    expected = await derived(api, devices["in_order"][0]["id"], devices["in_order"][0]["unique_id"])
    assert len(expected["trips"]) == 2
    assert any(e["type"] == "overspeed" for e in expected["events"])
    odometer = (await _vehicle(api, fleet, devices["in_order"][1]["id"]))["odometer_m"]
    assert odometer > 10_000
    for name in ("halves_reversed", "middle_last"):
        dev, vehicle = devices[name]
        assert await derived(api, dev["id"], dev["unique_id"]) == expected, name
        assert (await _vehicle(api, fleet, vehicle["id"]))["odometer_m"] == odometer, name
    # Every stored event was passed on once per device, however often it was derived again.
    by_device: dict[str, list[str]] = {}
    for e in published:
        by_device.setdefault(e.device_uid, []).append(e.key)
    for name, (dev, _) in devices.items():
        keys = by_device[dev["unique_id"]]
        assert len(keys) == len(set(keys)), name
        stored = {e["key"].replace("UID", dev["unique_id"]) for e in expected["events"]}
        assert stored <= set(keys), name


def _fields(p: Point) -> dict[str, Any]:
    return {name: getattr(p, name) for name in Point.__slots__}


async def test_trips_events_and_the_track_are_read_through_the_api(
    api: Api, fleet: TenantUsers, monkeypatch: pytest.MonkeyPatch
) -> None:
    import csv
    import io
    import xml.etree.ElementTree as ET

    from ctafleet.telematics.history import service as history

    other = await api.tenant(roles=["admin"])
    vehicle = await new_vehicle(api, fleet)
    dev = await device(api, fleet, vehicle_id=vehicle["id"])
    today = day(api)
    await send(api, dev["credential"], today.track.points)
    h = fleet.headers()

    # Trips, newest first, a page at a time.
    url = f"/api/v1/vehicles/{vehicle['id']}/trips"
    r = await api.client.get(url, params={"limit": 1}, headers=h)
    assert r.status_code == 200, r.text
    page = r.json()
    assert page["pagination"]["has_more"] is True
    second = page["data"][0]
    assert second["distance_m"] == pytest.approx(today.trip_m[1], rel=0.01)
    r = await api.client.get(
        url, params={"limit": 1, "cursor": page["pagination"]["next_cursor"]}, headers=h
    )
    first = r.json()["data"][0]
    assert r.json()["pagination"]["has_more"] is False
    assert first["end_time"] < second["start_time"]
    assert first["device_id"] == dev["id"]
    # Those overlapping a range only; a backwards range is refused.
    r = await api.client.get(url, params={"until": first["end_time"]}, headers=h)
    assert [t["id"] for t in r.json()["data"]] == [first["id"]]
    r = await api.client.get(
        url, params={"since": second["start_time"], "until": first["start_time"]}, headers=h
    )
    assert_problem(r, 422, "bad-range")
    r = await api.client.get(url, params={"format": "csv"}, headers=h)
    assert r.status_code == 200, r.text
    assert len(list(csv.DictReader(io.StringIO(r.text)))) == 2
    assert_problem(await api.client.get(url, headers=other.headers()), 404, "not-found")

    # Events, by type and vehicle; another tenant sees none of them.
    r = await api.client.get(
        "/api/v1/telemetry/events",
        params={"vehicle_id": vehicle["id"], "type": "overspeed,idle"},
        headers=h,
    )
    assert r.status_code == 200, r.text
    [overspeed] = r.json()["data"]
    assert (overspeed["type"], overspeed["limit"]) == ("overspeed", LIMIT_MPS)
    assert first["start_time"] <= overspeed["time"] <= first["end_time"]
    r = await api.client.get(
        "/api/v1/telemetry/events", params={"vehicle_id": vehicle["id"]}, headers=other.headers()
    )
    assert r.json()["data"] == []
    r = await api.client.get("/api/v1/telemetry/events", params={"type": "speeding"}, headers=h)
    assert_problem(r, 422, "validation-error")

    # The track, in three formats; the whole drive is simplified by default.
    url = f"/api/v1/devices/{dev['id']}/track"
    r = await api.client.get(url, params={"format": "geojson"}, headers=h)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/geo+json")
    stored = int(r.headers["x-track-positions"])
    assert stored == len(today.track.points)
    [line] = r.json()["features"]
    assert line["geometry"]["type"] == "LineString"
    assert 2 < len(line["geometry"]["coordinates"]) < stored  # straight roads need few points
    r = await api.client.get(url, params={"format": "gpx", "simplify": 0}, headers=h)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/gpx+xml")
    ns = {"g": "http://www.topografix.com/GPX/1/1"}
    # Our own answer, not untrusted input.
    assert len(ET.fromstring(r.text).findall(".//g:trkpt", ns)) == stored  # noqa: S314
    r = await api.client.get(url, params={"format": "csv", "simplify": 0}, headers=h)
    assert r.status_code == 200, r.text
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert len(rows) == stored
    assert float(rows[0]["lat"]) == pytest.approx(today.track.points[0].lat)
    r = await api.client.get(url, params={"format": "kml"}, headers=h)
    assert_problem(r, 422, "validation-error")
    assert_problem(await api.client.get(url, headers=other.headers()), 404, "not-found")
    monkeypatch.setattr(history, "MAX_TRACK_POINTS", 10)
    assert_problem(await api.client.get(url, headers=h), 422, "track-too-long")


async def test_a_tenants_own_thresholds_apply_from_its_next_batch(api: Api) -> None:
    """Set through the telemetry policy, read by the worker: no hook, no restart."""
    strict = await api.tenant(roles=["admin"])
    lenient = await api.tenant(roles=["admin"])
    r = await api.client.patch(
        "/api/v1/telemetry/policy",
        json={"rules": {"speed_limit_mps": LIMIT_MPS}},
        headers=strict.headers(),
    )
    assert r.status_code == 200, r.text
    types = {}
    for t in (strict, lenient):
        dev = await device(api, t)
        await send(api, dev["credential"], day(api).track.points)
        types[t.id] = [
            e["type"] for e in (await derived(api, dev["id"], dev["unique_id"]))["events"]
        ]
    assert types[strict.id].count("overspeed") == 1
    assert "overspeed" not in types[lenient.id]


async def test_two_devices_in_one_vehicle_move_its_odometer_once(
    api: Api, fleet: TenantUsers
) -> None:
    """A hardwired tracker and the driver's phone report the same drive: the vehicle's
    meters follow the device that feeds them, the other's distance is derived but not added."""
    vehicle = await new_vehicle(api, fleet, odometer_m=1000)
    tracker = await device(api, fleet, vehicle_id=vehicle["id"])
    phone = await device(api, fleet, vehicle_id=vehicle["id"])
    assert (tracker["feeds_meters"], phone["feeds_meters"]) == (True, False)
    track = day(api).track
    await send(api, tracker["credential"], track.points)
    await send(api, phone["credential"], track.points)
    driven = (await derived(api, phone["id"], phone["unique_id"]))["state"]["odometer_m"]
    assert driven == pytest.approx(track.truth_m, rel=0.01)  # the phone's own distance
    after = await _vehicle(api, fleet, vehicle["id"])
    assert after["odometer_m"] - 1000 == pytest.approx(track.truth_m, rel=0.01)  # once
