"""Geofences: geometry, schedules, GeoJSON, and the enter/exit/dwell and speed-limit events."""

from __future__ import annotations

import json
from datetime import UTC, datetime, time

import pytest
from shapely.geometry import Point as ShapelyPoint  # type: ignore[import-untyped]

from ctafleet.telematics.derive import Geofence, GeofenceSet, Rules, Schedule, Window
from ctafleet.telematics.derive.geo import destination, haversine_m
from tests.telematics.derive.kit import Drive, at, box, east, gid, kinds, run


@pytest.mark.parametrize("lat", [0.0, 60.0, 78.0])
def test_a_circle_radius_is_metres_at_any_latitude(lat: float) -> None:
    fence = Geofence.from_circle(id=gid(1), name="depot", lat=lat, lon=24.9, radius_m=1000.0)
    fences = GeofenceSet([fence])

    for bearing in range(0, 360, 15):
        inside = destination(lat, 24.9, bearing, 990.0)
        outside = destination(lat, 24.9, bearing, 1010.0)
        assert fence.contains(*inside), bearing
        assert not fence.contains(*outside), bearing
        assert fences.containing(*inside, 0.0) == [fence]
        assert fences.containing(*outside, 0.0) == []
        # The drawn polygon is as good (a 64-gon: at most 1.2 m inside the circle).
        assert fence.geometry.intersects(ShapelyPoint(inside[1], inside[0]))
        assert not fence.geometry.intersects(ShapelyPoint(outside[1], outside[0]))
    for lon, vlat in fence.geometry.exterior.coords:
        assert haversine_m(lat, 24.9, vlat, lon) == pytest.approx(1000.0, abs=0.01)


def test_polygon_enter_dwell_exit() -> None:
    yard = Geofence(id=gid(7), name="Yard <north> & co", geometry=box(east_from=500, east_to=1500))
    d = Drive().park(seconds=60).drive(seconds=100, speed=10.0, bearing=90.0)
    d.park(seconds=660, every_s=30).drive(seconds=100, speed=10.0).park(seconds=600)

    result = run(d.points, geofences=[yard])

    geo = [e for e in result.events if e.type.startswith("geofence")]
    assert [e.type for e in geo] == ["geofence_enter", "geofence_dwell", "geofence_exit"]
    assert all(e.geofence_id == yard.id for e in geo)
    enter, dwell, leave = geo
    assert dwell.duration_s is not None
    assert dwell.duration_s >= 600.0
    assert leave.duration_s == (leave.time - enter.time).total_seconds()
    assert haversine_m(*east(500), *at(enter)) < 15.0
    assert haversine_m(*east(1500), *at(leave)) < 15.0
    assert len({e.key for e in geo}) == 3


def test_circle_enter_and_exit_when_driving_through() -> None:
    lat, lon = east(2000)
    ring = Geofence.from_circle(id=gid(2), name="junction", lat=lat, lon=lon, radius_m=300.0)
    d = Drive().park(seconds=60).drive(seconds=400, speed=10.0, bearing=90.0).park(seconds=600)

    result = run(d.points, geofences=[ring])

    assert [k for k in kinds(result) if k.startswith("geofence")] == [
        "geofence_enter",
        "geofence_exit",
    ]
    leave = result.events[-1]
    assert leave.duration_s == pytest.approx(60.0, abs=2.0)


def school_zone(schedule: Schedule | None = None) -> Geofence:
    return Geofence(
        id=gid(3),
        name="school",
        geometry=box(east_from=1000, east_to=3000),
        speed_limit_mps=14.0,
        schedule=schedule,
    )


def test_a_geofence_limit_lower_than_the_vehicles_applies_inside_it() -> None:
    d = Drive().park(seconds=60).drive(seconds=250, speed=20.0, bearing=90.0).park(seconds=600)

    result = run(d.points, rules=Rules(speed_limit_mps=30.0), geofences=[school_zone()])

    (event,) = [e for e in result.events if e.type == "overspeed"]
    assert event.limit == 14.0
    assert event.value == pytest.approx(20.0)
    assert event.duration_s == pytest.approx(100.0, abs=2.0)
    assert haversine_m(*east(1000), *at(event)) < 25.0


MORNINGS = Schedule(
    timezone="Europe/Helsinki",
    windows=(Window(days=frozenset(range(5)), start=time(7), end=time(9)),),
)


def test_outside_its_schedule_a_geofence_has_no_limit_and_no_events() -> None:
    # 11:00 in Helsinki.
    d = Drive(t=datetime(2024, 5, 6, 8, 0, tzinfo=UTC)).park(seconds=60)
    d.drive(seconds=250, speed=20.0, bearing=90.0).park(seconds=600)

    result = run(d.points, rules=Rules(speed_limit_mps=30.0), geofences=[school_zone(MORNINGS)])

    assert result.events == []


def test_inside_its_schedule_a_geofence_limits_speed() -> None:
    # 08:00 in Helsinki (summer time, UTC+3).
    d = Drive(t=datetime(2024, 5, 6, 5, 0, tzinfo=UTC)).park(seconds=60)
    d.drive(seconds=250, speed=20.0, bearing=90.0).park(seconds=600)

    result = run(d.points, rules=Rules(speed_limit_mps=30.0), geofences=[school_zone(MORNINGS)])

    # The overspeed ends (and is reported) with the exit that lifts the limit.
    assert kinds(result) == ["geofence_enter", "geofence_exit", "overspeed"]


def test_schedules_follow_local_time_across_midnight_and_daylight_saving() -> None:
    nights = Schedule(
        timezone="Europe/Helsinki",
        windows=(Window(days=frozenset({4}), start=time(22), end=time(6)),),
    )
    # Friday 21:30 / 22:30 and Saturday 05:30 / 06:30, Helsinki winter time (UTC+2).
    assert not nights.active_at(datetime(2024, 1, 12, 19, 30, tzinfo=UTC))
    assert nights.active_at(datetime(2024, 1, 12, 20, 30, tzinfo=UTC))
    assert nights.active_at(datetime(2024, 1, 13, 3, 30, tzinfo=UTC))
    assert not nights.active_at(datetime(2024, 1, 13, 4, 30, tzinfo=UTC))
    # 07:30 local is 05:30 UTC in winter and 04:30 UTC in summer.
    assert MORNINGS.active_at(datetime(2024, 1, 15, 5, 30, tzinfo=UTC))
    assert not MORNINGS.active_at(datetime(2024, 7, 15, 6, 30, tzinfo=UTC))
    assert MORNINGS.active_at(datetime(2024, 7, 15, 4, 30, tzinfo=UTC))
    # Saturday morning is outside Monday-Friday windows.
    assert not MORNINGS.active_at(datetime(2024, 7, 13, 4, 30, tzinfo=UTC))
    with pytest.raises(ValueError, match="time zone"):
        Schedule(timezone="Mars/Olympus", windows=MORNINGS.windows)


def test_geojson_round_trips() -> None:
    lat, lon = east(100)
    fences = [
        school_zone(MORNINGS),
        Geofence.from_circle(
            id=gid(4), name="depot", lat=lat, lon=lon, radius_m=250.0, dwell_s=120.0
        ),
    ]
    for fence in fences:
        data = json.loads(json.dumps(fence.to_geojson()))
        back = Geofence.from_geojson(data)
        assert back == fence
        assert back.bounds == fence.bounds
    circle = fences[1].to_geojson()
    assert circle["geometry"] == {"type": "Point", "coordinates": [lon, lat]}


def test_geojson_from_elsewhere() -> None:
    polygon = {
        "type": "Polygon",
        "coordinates": [[[24.0, 60.0, 5.0], [24.1, 60.0, 5.0], [24.1, 60.1, 5.0], [24.0, 60.0, 5]]],
    }
    fence = Geofence.from_geojson(polygon, id=gid(9), name="triangle")
    assert fence.contains(60.01, 24.05)
    assert not fence.contains(60.09, 24.01)
    point = {"type": "Feature", "geometry": {"type": "Point", "coordinates": [24.0, 60.0]}}
    assert Geofence.from_geojson(point, id=gid(10), radius_m=50).circle is not None

    with pytest.raises(ValueError, match="radius"):
        Geofence.from_geojson(point, id=gid(10))
    with pytest.raises(ValueError, match="no id"):
        Geofence.from_geojson(polygon)
    with pytest.raises(ValueError, match="not an area"):
        Geofence.from_geojson({"type": "LineString", "coordinates": [[0, 0], [1, 1]]}, id=gid(1))
    bowtie = {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]}
    with pytest.raises(ValueError, match="invalid polygon"):
        Geofence.from_geojson(bowtie, id=gid(1))


def test_a_geofence_no_longer_configured_is_forgotten_without_an_exit() -> None:
    d = Drive().park(seconds=60).drive(seconds=100, speed=10.0, bearing=90.0).park(seconds=60)
    yard = Geofence(id=gid(7), name="yard", geometry=box(east_from=500, east_to=1500))
    first = run(d.points, geofences=[yard])
    assert list(first.state.inside) == [str(yard.id)]

    d.drive(seconds=200, speed=10.0)
    second = run(d.points, state=first.state)

    assert second.events == []
    assert second.state.inside == {}


def test_many_geofences_use_an_index_with_the_same_answers() -> None:
    fences = [
        Geofence.from_circle(
            id=gid(i), name=f"c{i}", lat=east(i * 150.0)[0], lon=east(i * 150.0)[1], radius_m=200.0
        )
        for i in range(100)
    ]
    indexed = GeofenceSet(fences)
    for metres in range(-500, 16_000, 37):
        lat, lon = east(float(metres))
        expected = [f for f in fences if f.contains(lat, lon)]
        assert indexed.containing(lat, lon, 0.0) == expected
    with pytest.raises(ValueError, match="unique"):
        GeofenceSet([fences[0], fences[0]])
