"""Overspeed, harsh driving, low battery and offline events."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from datetime import timedelta

import pytest

from ctafleet.telematics.derive import Event, EventSink, Rules, offline
from tests.telematics.derive.kit import Drive, kinds, run

LIMIT = Rules(speed_limit_mps=25.0)


def test_overspeed_shorter_than_the_minimum_makes_no_event() -> None:
    d = Drive().park(seconds=60).drive(seconds=60, speed=20.0)
    d.drive(seconds=7, speed=28.0, rate=5.0).drive(seconds=60, speed=20.0).park(seconds=600)

    result = run(d.points, rules=LIMIT)

    assert "overspeed" not in kinds(result)


def test_overspeed_longer_than_the_minimum_makes_one_event_with_its_maximum() -> None:
    d = Drive().park(seconds=60).drive(seconds=60, speed=20.0)
    d.drive(seconds=10, speed=27.0).drive(seconds=15, speed=31.0).drive(seconds=10, speed=27.0)
    d.drive(seconds=60, speed=20.0).park(seconds=600)

    result = run(d.points, rules=LIMIT)

    (event,) = [e for e in result.events if e.type == "overspeed"]
    assert event.value == pytest.approx(31.0)
    assert event.limit == 25.0
    assert event.duration_s is not None
    assert 35.0 <= event.duration_s <= 45.0
    (trip,) = result.trips
    assert trip.start_time < event.time < trip.end_time


def test_no_limit_no_overspeed() -> None:
    d = Drive().park(seconds=60).drive(seconds=120, speed=60.0).park(seconds=600)

    assert "overspeed" not in kinds(run(d.points))


def test_harsh_braking_from_speed_changes() -> None:
    d = Drive().park(seconds=60).drive(seconds=60, speed=20.0)
    d.ramp(0.0, rate=5.0).park(seconds=60)

    result = run(d.points)

    (event,) = [e for e in result.events if e.type == "harsh_braking"]
    assert event.value == pytest.approx(-5.0)
    assert event.limit == Rules().harsh_brake_mps2
    assert "harsh_acceleration" not in kinds(result)


def test_brisk_driving_and_sparse_fixes_are_not_harsh() -> None:
    d = Drive().park(seconds=60).drive(seconds=60, speed=20.0, rate=2.5)
    d.ramp(0.0, rate=3.0).park(seconds=60)
    # 20 m/s to 0 between fixes 10 s apart: the pair is too far apart to tell.
    for speed in (20.0, 0.0, 20.0, 0.0):
        d.wait(10)
        d.point(speed_mps=speed)

    assert not {"harsh_braking", "harsh_acceleration"} & set(kinds(run(d.points)))


def test_harsh_acceleration_from_speed_changes() -> None:
    d = Drive().park(seconds=60).drive(seconds=60, speed=15.0, rate=4.0).park(seconds=60)

    assert kinds(run(d.points)).count("harsh_acceleration") == 1


def test_harsh_braking_from_the_device_alarm() -> None:
    d = Drive().park(seconds=60).drive(seconds=60, speed=20.0)
    d.wait(1)
    alarm = d.point(attributes={"alarm": "sos,hardBraking"}, speed_mps=14.0)
    # The device's accelerometer is trusted from now on: speed deltas add nothing.
    d.speed = 14.0
    d.ramp(0.0, rate=5.0).park(seconds=60)

    result = run(d.points)

    (event,) = [e for e in result.events if e.type == "harsh_braking"]
    assert event.value is None
    assert event.time == alarm.fix_time
    assert event.lat == pytest.approx(alarm.lat)
    assert result.state.harsh_alarms == ("harsh_braking",)


def test_low_battery_once_until_it_recovers() -> None:
    d = Drive().park(seconds=60)
    for pct in (25.0, 21.0, 19.0, 18.0, 21.0, 24.0, 19.0, 26.0, 19.5):
        d.wait(60)
        d.point(battery_pct=pct, lat=None, lon=None)

    result = run(d.points)

    lows = [e for e in result.events if e.type == "low_battery"]
    assert [e.value for e in lows] == [19.0, 19.5]
    assert all(e.limit == 20.0 for e in lows)


def test_offline_once_until_the_next_point_then_online() -> None:
    d = Drive().park(seconds=60)
    state = run(d.points).state
    last = d.t

    assert offline(state, now=last + timedelta(minutes=14), rules=Rules()) == []
    (first,) = offline(state, now=last + timedelta(minutes=16), rules=Rules())
    (again,) = offline(state, now=last + timedelta(hours=5), rules=Rules())
    assert first == again
    assert first.type == "device_offline"
    assert first.time == last + timedelta(seconds=900)
    assert first.lat == pytest.approx(d.lat)

    d.wait(3600)
    d.point()
    result = run(d.points, state=state)

    offline_event, online = result.events
    assert offline_event == first
    assert online.type == "device_online"
    assert online.duration_s == 3600.0
    assert offline(result.state, now=d.t + timedelta(minutes=1), rules=Rules()) == []


def test_events_are_json_and_reach_a_sink() -> None:
    d = Drive(battery_pct=10.0).park(seconds=60)
    result = run(d.points)

    class Collect:
        def __init__(self) -> None:
            self.got: list[Event] = []

        async def publish(self, events: Sequence[Event]) -> None:
            self.got.extend(events)

    sink: EventSink = Collect()
    asyncio.run(sink.publish(result.events))

    (event,) = result.events
    data = json.loads(json.dumps(event.as_dict()))
    assert data["type"] == "low_battery"
    assert data["time"].endswith("Z")
    assert data["key"] == event.key
    assert event.key.startswith("low_battery:dev-1:")
