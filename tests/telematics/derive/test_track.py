"""Track simplification and the GeoJSON, GPX and CSV exports."""

from __future__ import annotations

import csv
import io
import json
import math
import xml.etree.ElementTree as ET
from datetime import timedelta

import pytest

from ctafleet.telematics.derive import track
from ctafleet.telematics.derive.geo import destination
from ctafleet.telematics.derive.track import TrackPoint
from tests.telematics.derive.kit import HOME, T0, Drive

NS = {"g": track.GPX_NS, "x": track.GPXTPX_NS}


def sample() -> list[TrackPoint]:
    return [
        TrackPoint(time=T0, lat=60.1, lon=24.9, speed_mps=0.0, course_deg=90.0, altitude_m=12.0),
        TrackPoint(time=T0 + timedelta(seconds=5, microseconds=250_000), lat=60.1001, lon=24.91),
        TrackPoint(time=T0 + timedelta(seconds=10), lat=-33.9, lon=-70.6, speed_mps=13.4),
    ]


def wiggly_line(n: int) -> list[TrackPoint]:
    """10 km due east with a metre of GPS wobble either side."""
    points = []
    for i in range(n):
        along = 10_000.0 * i / (n - 1)
        lat, lon = destination(*destination(*HOME, 90.0, along), 0.0, math.sin(i * 0.7))
        points.append(TrackPoint(time=T0 + timedelta(seconds=i), lat=lat, lon=lon))
    return points


def test_simplify_reduces_a_wiggly_straight_line_to_its_ends() -> None:
    line = wiggly_line(10_000)

    simple = track.simplify(line)

    assert len(simple) <= 5
    assert simple[0] is line[0]
    assert simple[-1] is line[-1]
    assert [p.time for p in simple] == sorted(p.time for p in simple)


def test_simplify_keeps_corners_and_what_the_tolerance_cannot_drop() -> None:
    d = Drive().drive(seconds=300, speed=10.0, bearing=90.0)
    turn = len(d.points) - 1
    d.drive(seconds=300, speed=10.0, bearing=0.0)
    line = track.from_points(d.points)

    simple = track.simplify(line)
    fine = track.simplify(wiggly_line(1000), tolerance_m=0.1)

    assert 3 <= len(simple) <= 10
    assert line[turn] in simple
    assert len(fine) > 500
    assert track.simplify(line[:2]) == line[:2]


def test_from_points_takes_only_usable_fixes() -> None:
    d = Drive().drive(seconds=5, speed=10.0)
    fixes = len(d.points)
    d.point(lat=None, lon=None)
    d.point(lat=0.0, lon=0.0)
    d.point(valid=False)

    assert len(track.from_points(d.points)) == fixes


def test_geojson_is_lon_lat_with_times() -> None:
    data = json.loads(json.dumps(track.to_geojson(sample(), name="ABC-123")))

    (feature,) = data["features"]
    assert data["type"] == "FeatureCollection"
    assert feature["geometry"]["type"] == "LineString"
    assert feature["geometry"]["coordinates"][0] == [24.9, 60.1]
    assert feature["geometry"]["coordinates"][2] == [-70.6, -33.9]
    props = feature["properties"]
    assert props["times"] == [
        "2024-05-06T08:00:00Z",
        "2024-05-06T08:00:05.250000Z",
        "2024-05-06T08:00:10Z",
    ]
    assert props["speeds_mps"] == [0.0, None, 13.4]
    assert props["name"] == "ABC-123"
    assert track.to_geojson([])["features"] == []
    assert track.to_geojson(sample()[:1])["features"][0]["geometry"]["type"] == "Point"


def test_gpx_is_valid_xml_with_every_point() -> None:
    name = 'Van <7> & "friends"\x01'

    text = track.to_gpx(sample(), name=name)
    root = ET.fromstring(text.encode())  # noqa: S314 (our own output)

    assert text.startswith('<?xml version="1.0" encoding="UTF-8"?>')
    assert root.tag == f"{{{track.GPX_NS}}}gpx"
    assert root.get("version") == "1.1"
    assert root.findtext("g:trk/g:name", namespaces=NS) == 'Van <7> & "friends"'
    points = root.findall("g:trk/g:trkseg/g:trkpt", NS)
    assert [(float(p.get("lat", "")), float(p.get("lon", ""))) for p in points] == [
        (60.1, 24.9),
        (60.1001, 24.91),
        (-33.9, -70.6),
    ]
    assert [p.findtext("g:time", namespaces=NS) for p in points] == [
        "2024-05-06T08:00:00Z",
        "2024-05-06T08:00:05.250000Z",
        "2024-05-06T08:00:10Z",
    ]
    assert points[0].findtext("g:ele", namespaces=NS) == "12.0"
    assert points[1].find("g:ele", NS) is None
    speed = points[2].findtext("g:extensions/x:TrackPointExtension/x:speed", namespaces=NS)
    assert speed == "13.40"
    # The schema's order inside a point: ele, time, extensions.
    assert [c.tag.split("}")[1] for c in points[0]] == ["ele", "time", "extensions"]


def test_csv_has_a_header_and_iso_utc_times() -> None:
    rows = list(csv.reader(io.StringIO(track.to_csv(sample()))))

    assert rows[0] == ["time", "lat", "lon", "speed_mps", "course_deg", "altitude_m"]
    assert len(rows) == 4
    assert rows[1] == ["2024-05-06T08:00:00Z", "60.1000000", "24.9000000", "0.0", "90.0", "12.0"]
    assert rows[2][3:] == ["", "", ""]
    assert float(rows[3][2]) == pytest.approx(-70.6)
