"""Trips, stops, the odometer and its filters, engine time."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from ctafleet.telematics.derive import Rules
from ctafleet.telematics.derive.geo import destination, haversine_m
from tests.telematics.derive.kit import T0, Drive, kinds, moved, run


def test_a_ten_minute_stop_splits_two_drives_into_two_trips() -> None:
    d = Drive().park(seconds=120)
    start = d.truth_m
    d.drive(seconds=600, speed=15.0, bearing=90.0).ramp(0.0)
    first_m = d.truth_m - start
    d.park(seconds=600)
    mid = d.truth_m
    d.drive(seconds=300, speed=20.0, bearing=0.0).ramp(0.0)
    second_m = d.truth_m - mid
    d.park(seconds=600)

    result = run(d.points)

    assert len(result.trips) == 2
    one, two = result.trips
    assert one.distance_m == pytest.approx(first_m, rel=0.01)
    assert two.distance_m == pytest.approx(second_m, rel=0.01)
    assert result.odometer_m == pytest.approx(d.truth_m, rel=0.01)
    # The first trip leaves from the last fix of the first stop and ends where it stood still.
    assert one.start_time == T0 + timedelta(seconds=120)
    assert one.max_speed_mps == pytest.approx(15.0)
    assert two.max_speed_mps == pytest.approx(20.0)
    assert one.duration_s == pytest.approx(one.driving_s + one.idle_s)
    assert one.idle_s == 0.0
    assert one.avg_speed_mps == pytest.approx(one.distance_m / one.duration_s)
    assert two.start_time >= one.end_time + timedelta(seconds=600)
    assert haversine_m(one.end_lat, one.end_lon, two.start_lat, two.start_lon) < 1.0
    # The stops before each trip, reported once the trip was real.
    assert [s.duration_s for s in result.stops] == [
        pytest.approx((one.start_time - d.points[0].fix_time).total_seconds()),
        pytest.approx((two.start_time - one.end_time).total_seconds()),
    ]
    assert result.open_trip is None
    assert one.state_after is not None
    assert two.state_after is not None


def test_a_halt_shorter_than_a_stop_stays_inside_the_trip() -> None:
    d = Drive().park(seconds=60)
    d.drive(seconds=300, speed=12.0).park(seconds=120, every_s=10).drive(seconds=300, speed=12.0)
    d.park(seconds=600)

    (trip,) = run(d.points).trips

    assert trip.distance_m == pytest.approx(d.truth_m, rel=0.01)
    assert trip.idle_s == pytest.approx(120.0, abs=10.0)
    assert trip.duration_s == pytest.approx(trip.driving_s + trip.idle_s)


def test_a_trip_in_progress_is_reported_as_open() -> None:
    d = Drive().park(seconds=60).drive(seconds=120, speed=10.0)

    result = run(d.points)

    assert result.trips == []
    assert result.open_trip is not None
    assert result.open_trip.distance_m == pytest.approx(d.truth_m, rel=0.01)
    assert result.open_trip.end_time == d.t
    assert result.open_trip.state_after is None


def test_moving_less_than_the_minimum_distance_is_no_trip() -> None:
    # Manoeuvring in the yard: 150 m at walking pace, then parked again.
    d = Drive().park(seconds=600).drive(seconds=100, speed=1.5).park(seconds=900)
    d.drive(seconds=200, speed=10.0).park(seconds=600)

    result = run(d.points)

    assert len(result.trips) == 1
    # The stop before the real trip covers the yard time too.
    (stop,) = result.stops
    assert stop.start_time == T0 + timedelta(seconds=30)
    assert stop.end_time == result.trips[0].start_time


def test_a_gps_jump_of_50_km_in_2_s_is_ignored() -> None:
    d = Drive().park(seconds=60).drive(seconds=120, speed=15.0)
    lat, lon = destination(d.lat, d.lon, 45.0, 50_000.0)
    d.wait(1)
    d.point(lat=lat, lon=lon, speed_mps=None)
    d.wait(1)
    d.point(speed_mps=15.0)
    d.drive(seconds=120, speed=15.0).park(seconds=600)

    result = run(d.points)

    (trip,) = result.trips
    # The vehicle stood for the 2 s of the jump; the truth does not include the spike.
    assert result.odometer_m == pytest.approx(d.truth_m, rel=0.01)
    assert trip.max_speed_mps == pytest.approx(15.0)


def test_a_vehicle_that_really_moved_while_off_is_found_again() -> None:
    d = Drive().park(seconds=60)
    far = destination(d.lat, d.lon, 180.0, 80_000.0)
    d.lat, d.lon = far
    d.wait(10)
    d.park(seconds=90, every_s=30)

    result = run(d.points, rules=Rules(relocate_after=3))

    assert result.state.fix_lat == pytest.approx(far[0])
    # Where it went is unknown: no distance for the move.
    assert result.odometer_m == 0.0


def test_zero_coordinates_are_ignored() -> None:
    d = Drive().park(seconds=60).drive(seconds=60, speed=15.0)
    for _ in range(3):
        d.wait(1)
        d.point(lat=0.0, lon=0.0)
    d.drive(seconds=60, speed=15.0).park(seconds=600)

    result = run(d.points)

    assert result.odometer_m == pytest.approx(d.truth_m, rel=0.01)
    assert len(result.trips) == 1


def test_poor_accuracy_is_ignored() -> None:
    d = Drive().park(seconds=60).drive(seconds=60, speed=15.0)
    for offset in (300.0, 600.0):
        lat, lon = destination(d.lat, d.lon, 0.0, offset)
        d.wait(1)
        d.point(lat=lat, lon=lon, accuracy_m=500.0)
        d.wait(1)
        d.point(lat=lat, lon=lon, accuracy_m=None, hdop=40.0)
    d.drive(seconds=60, speed=15.0).park(seconds=600)

    result = run(d.points)

    assert result.odometer_m == pytest.approx(d.truth_m, rel=0.01)


def test_a_parked_vehicles_drift_adds_no_distance() -> None:
    d = Drive().park(seconds=60)
    lat, lon = d.lat, d.lon
    for i in range(60):
        d.wait(30)
        drift = destination(lat, lon, i * 37.0 % 360, 8.0)
        d.point(lat=drift[0], lon=drift[1], speed_mps=0.3)

    result = run(d.points)

    assert result.odometer_m == 0.0
    assert result.trips == []


def test_the_devices_own_odometer_is_preferred() -> None:
    d = Drive().park(seconds=60)
    d.drive(seconds=300, speed=15.0).park(seconds=600)
    # The device counts its wheels: 3 % more than GPS, from a reading of 120,000 km.
    points = [moved(p, odometer_m=120_000_000.0 + 1.03 * i * 12.0) for i, p in enumerate(d.points)]
    n = len(points)

    result = run(points)

    assert result.odometer_m == pytest.approx(1.03 * (n - 1) * 12.0)
    (trip,) = result.trips
    assert trip.distance_m == pytest.approx(trip.end_odometer_m - trip.start_odometer_m)
    assert trip.distance_m > 1.01 * d.truth_m or trip.distance_m < 0.99 * d.truth_m


def test_a_device_odometer_reset_starts_a_new_baseline() -> None:
    d = Drive().drive(seconds=10, speed=10.0)
    points = [moved(p, odometer_m=5_000.0 + 10.0 * i) for i, p in enumerate(d.points)]
    d.drive(seconds=5, speed=10.0)
    later = [moved(p, odometer_m=10.0 * i) for i, p in enumerate(d.points[len(points) :])]

    result = run(points + later)

    assert result.odometer_m == pytest.approx(10.0 * (len(points) - 1 + len(later) - 1))


def test_messages_without_a_fix_never_move_the_vehicle() -> None:
    d = Drive().park(seconds=60)
    for _ in range(10):
        d.wait(10)
        d.point(lat=None, lon=None, speed_mps=40.0, ignition=True, odometer_m=9e6)
    d.wait(10)
    d.point(lat=50.0, lon=10.0, valid=False)

    result = run(d.points)

    assert result.odometer_m == 0.0
    assert result.open_trip is None or result.open_trip.distance_m == 0.0
    assert result.state.ignition is True


def test_engine_seconds_follow_the_ignition() -> None:
    d = Drive(ignition=False).park(seconds=60)
    d.park(seconds=1800, every_s=10, ignition=True)
    on = d.points[2].fix_time
    d.park(seconds=3600, every_s=60, ignition=False)
    off = d.points[2 + 180].fix_time
    # A silence with the ignition on counts nothing: what happened is unknown.
    d.wait(10)
    d.point(ignition=True)
    d.wait(5000)
    d.point(ignition=True)
    d.wait(20)
    d.point(ignition=False)

    result = run(d.points)

    assert (off - on).total_seconds() == 1850.0
    assert result.engine_seconds == pytest.approx(1850.0 + 20.0)


def test_ignition_starts_a_trip_and_ignition_off_ends_it_despite_drift() -> None:
    d = Drive(ignition=False).park(seconds=120)
    d.wait(5)
    d.point(ignition=True)
    d.drive(seconds=300, speed=14.0, ignition=True)
    d.park(seconds=10, every_s=10, ignition=True)
    # Off, while GPS noise claims a walking pace.
    d.park(seconds=900, every_s=10, ignition=False, speed_mps=1.2)

    result = run(d.points)

    (trip,) = result.trips
    assert trip.start_time == T0 + timedelta(seconds=125)
    assert trip.distance_m == pytest.approx(d.truth_m, rel=0.01)
    assert trip.end_time <= d.points[0].fix_time + timedelta(seconds=120 + 330 + 20)


def test_idling_makes_one_event_per_episode() -> None:
    d = Drive(ignition=True).park(seconds=120, every_s=10)
    d.drive(seconds=60, speed=10.0).park(seconds=400, every_s=10)
    d.drive(seconds=60, speed=10.0).park(seconds=60, every_s=10, ignition=False)

    result = run(d.points)

    idles = [e for e in result.events if e.type == "idle"]
    assert len(idles) == 1
    assert idles[0].duration_s == pytest.approx(400.0, abs=10.0)
    assert kinds(result).count("idle") == 1


def test_a_redelivered_batch_derives_nothing_twice() -> None:
    d = Drive().park(seconds=60).drive(seconds=300, speed=15.0).park(seconds=600)
    first = run(d.points)

    again = run(d.points, state=first.state)

    assert again.trips == []
    assert again.events == []
    assert again.odometer_m == first.odometer_m
    assert again.state == first.state


def test_points_out_of_order_are_sorted() -> None:
    d = Drive().park(seconds=60).drive(seconds=300, speed=15.0).park(seconds=600)

    shuffled = list(reversed(d.points))

    assert run(shuffled).trips == run(d.points).trips


def test_another_devices_point_is_refused() -> None:
    d = Drive().park(seconds=60)
    d.point(device_uid="other")

    with pytest.raises(ValueError, match="other"):
        run(d.points)


def test_rules_refuse_nonsense() -> None:
    with pytest.raises(ValueError, match="min_stop_s"):
        Rules(min_stop_s=0)
    with pytest.raises(ValueError, match="harsh_brake"):
        Rules(harsh_brake_mps2=3.0)
    assert Rules(speed_limit_mps=None).speed_limit_mps is None


def test_nothing_to_start_from() -> None:
    with pytest.raises(ValueError, match="neither"):
        run([])
    state = run(Drive().park(seconds=60).points).state
    assert run([], state=state).state == state


def test_trips_and_stops_are_json() -> None:
    d = Drive().park(seconds=120).drive(seconds=300, speed=15.0).park(seconds=600)
    result = run(d.points)

    (trip,) = result.trips
    (stop,) = result.stops
    data = json.loads(json.dumps({"trip": trip.as_dict(), "stop": stop.as_dict()}))

    assert data["trip"]["start_time"] == data["stop"]["end_time"]
    assert data["trip"]["distance_m"] == trip.distance_m
    assert "state_after" not in data["trip"]
