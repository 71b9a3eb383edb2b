"""Determinism: any split of the points, any checkpoint, any JSON round trip, same results."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ctafleet.telematics.derive import Advance, DeviceState, Geofence, GeofenceSet, Rules
from ctafleet.telematics.derive.geo import destination
from ctafleet.telematics.points import Point
from tests.telematics.derive.kit import HOME, Drive, box, gid, run

RULES = Rules(speed_limit_mps=25.0, dwell_s=120.0)
ZONES = GeofenceSet(
    [
        Geofence(id=gid(1), name="corridor", geometry=box(east_from=800, east_to=4000)),
        Geofence.from_circle(
            id=gid(2),
            name="slow",
            lat=destination(*HOME, 90.0, 1500.0)[0],
            lon=destination(*HOME, 90.0, 1500.0)[1],
            radius_m=400.0,
            speed_limit_mps=15.0,
        ),
    ]
)


def rich() -> list[Point]:
    """A day with something of everything."""
    d = Drive(ignition=False, battery_pct=80.0).park(seconds=120)
    d.wait(5)
    d.point(ignition=True)
    d.drive(seconds=200, speed=20.0, bearing=90.0, every_s=5, ignition=True)
    d.wait(1)
    d.point(lat=0.0, lon=0.0, ignition=True)
    spike = destination(d.lat, d.lon, 10.0, 50_000.0)
    d.wait(1)
    d.point(lat=spike[0], lon=spike[1], ignition=True)
    d.ramp(0.0, rate=5.0, ignition=True)
    d.park(seconds=120, every_s=10, ignition=True)
    d.drive(seconds=300, speed=28.0, every_s=5, ignition=True, battery_pct=15.0)
    d.park(seconds=700, every_s=20, ignition=False, battery_pct=14.0)
    for _ in range(5):
        d.wait(60)
        d.point(lat=None, lon=None, ignition=False)
    d.wait(2000)
    d.point(ignition=False, battery_pct=30.0)
    d.wait(5)
    d.point(ignition=True)
    d.drive(seconds=100, speed=15.0, bearing=270.0, every_s=2, ignition=True)
    d.wait(1)
    d.point(attributes={"alarm": "hardAcceleration"}, ignition=True)
    d.drive(seconds=400, speed=18.0, every_s=3, ignition=True).park(seconds=900, ignition=True)
    d.wait(10)
    d.point(ignition=False)
    return d.points


def outputs(results: list[Advance]) -> dict[str, Any]:
    last = results[-1]
    return {
        "trips": [t for r in results for t in r.trips],
        "stops": [s for r in results for s in r.stops],
        "events": [e for r in results for e in r.events],
        "odometer_m": last.odometer_m,
        "engine_seconds": last.engine_seconds,
        "open_trip": last.open_trip,
        "state": last.state.to_json(),
    }


def through_json(state: DeviceState) -> DeviceState:
    return DeviceState.from_json(json.loads(json.dumps(state.to_json())))


def in_parts(points: list[Point], cuts: list[int], *, via_json: bool = False) -> dict[str, Any]:
    results: list[Advance] = []
    state: DeviceState | None = None
    bounds = [0, *sorted(cuts), len(points)]
    for lo, hi in itertools.pairwise(bounds):
        if state is None and lo == hi:
            continue
        result = run(points[lo:hi], rules=RULES, geofences=list(ZONES), state=state)
        results.append(result)
        state = through_json(result.state) if via_json else result.state
    return outputs(results)


def test_the_rich_day_has_something_of_everything() -> None:
    whole = run(rich(), rules=RULES, geofences=list(ZONES))

    assert len(whole.trips) >= 2
    assert {e.type for e in whole.events} >= {
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
    }
    assert len({e.key for e in whole.events}) == len(whole.events)


def test_every_split_of_the_rich_day_gives_the_same_results() -> None:
    points = rich()
    whole = in_parts(points, [])

    for cut in range(1, len(points)):
        assert in_parts(points, [cut], via_json=cut % 2 == 0) == whole, cut


def test_every_trip_checkpoint_replays_what_followed() -> None:
    points = rich()
    whole = run(points, rules=RULES, geofences=ZONES)

    for i, trip in enumerate(whole.trips):
        assert trip.state_after is not None
        state = DeviceState.from_json(json.loads(json.dumps(trip.state_after)))
        after = [p for p in points if p.fix_time.timestamp() > (state.last_t or 0.0)]

        replay = run(after, rules=RULES, geofences=list(ZONES), state=state)

        assert replay.trips == whole.trips[i + 1 :]
        assert replay.events == whole.events[len(whole.events) - len(replay.events) :]
        assert replay.state == whole.state
        assert replay.odometer_m == whole.odometer_m


def test_state_survives_json_exactly() -> None:
    points = rich()
    half = len(points) // 2
    first = run(points[:half], rules=RULES, geofences=ZONES)
    text = json.dumps(first.state.to_json())

    restored = DeviceState.from_json(json.loads(text))
    before = first.state.to_json()

    assert restored == first.state
    assert restored.to_json() == first.state.to_json()
    direct = run(points[half:], rules=RULES, geofences=ZONES, state=first.state)
    again = run(points[half:], rules=RULES, geofences=ZONES, state=restored)
    assert outputs([again]) == outputs([direct])
    # advance never changes the state it was given.
    assert first.state.to_json() == before


def test_state_refuses_what_it_did_not_write() -> None:
    with pytest.raises(ValueError, match="version"):
        DeviceState.from_json({"device_uid": "x"})
    with pytest.raises(ValueError, match="malformed"):
        DeviceState.from_json({"v": 1, "device_uid": "x", "fix_t": "yesterday"})


SEGMENTS = st.lists(
    st.tuples(
        st.sampled_from(
            ["trip", "trip", "drive", "park", "wait", "heartbeat", "spike", "zero", "alarm"]
        ),
        st.one_of(st.sampled_from([0.5, 12.0, 20.0, 30.0]), st.floats(0.0, 40.0)),
        st.integers(min_value=1, max_value=1200),
        st.sampled_from([1.0, 2.0, 5.0, 30.0]),
        # Mostly along the road through the geofences east of home, and back.
        st.one_of(st.sampled_from([90.0, 90.0, 270.0]), st.floats(0.0, 360.0)),
        st.sampled_from([None, True, False]),
        st.sampled_from([None, 10.0, 18.0, 30.0, 90.0]),
    ),
    min_size=1,
    max_size=14,
)


def track(
    segments: list[tuple[str, float, int, float, float, bool | None, float | None]],
) -> list[Point]:
    d = Drive()
    for kind, speed, seconds, every, bearing, ignition, battery in segments:
        fields: dict[str, Any] = {"ignition": ignition, "battery_pct": battery}
        seconds_ = min(seconds, int(every * 150))
        if kind == "trip":
            d.drive(seconds=seconds_, speed=max(speed, 5.0), bearing=bearing, every_s=every)
            d.park(seconds=360, **fields)
        elif kind == "drive":
            d.drive(seconds=seconds_, speed=speed, bearing=bearing, every_s=every, **fields)
        elif kind == "park":
            d.park(seconds=seconds_, every_s=every, **fields)
        elif kind == "wait":
            d.wait(seconds)
        else:
            d.wait(1)
            if kind == "heartbeat":
                d.point(lat=None, lon=None, **fields)
            elif kind == "spike":
                lat, lon = destination(d.lat, d.lon, bearing, 30_000.0)
                d.point(lat=lat, lon=lon, **fields)
            elif kind == "zero":
                d.point(lat=0.0, lon=0.0, **fields)
            else:
                d.point(attributes={"alarm": "hardBraking"}, **fields)
    return d.points


@settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(segments=SEGMENTS, data=st.data())
def test_any_split_gives_the_same_results(
    segments: list[tuple[str, float, int, float, float, bool | None, float | None]],
    data: st.DataObject,
) -> None:
    points = track(segments)
    if not points:
        return
    cuts = data.draw(
        st.lists(st.integers(min_value=0, max_value=len(points)), min_size=1, max_size=3)
    )
    via_json = data.draw(st.booleans())

    assert in_parts(points, cuts, via_json=via_json) == in_parts(points, [])
