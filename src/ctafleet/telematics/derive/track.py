"""A vehicle's track for maps and downloads: simplification and GeoJSON, GPX 1.1 and CSV.

Simplification is Douglas-Peucker in metres: positions are projected on a plane tangent at
the track's middle (equirectangular: longitude scaled by cos(latitude)), so the tolerance
means the same distance at any latitude. The scale drifts by a few per cent for tracks
spanning hundreds of kilometres north-south, which a display tolerance does not notice.

The default tolerance, 10 m, is about the error of a GPS fix and less than a road's width: the
line drawn from the simplified track is indistinguishable from the full one down to street
zoom (about 2 pixels at zoom 15), while a day of 1 Hz driving shrinks by one to two orders of
magnitude. For a whole week on a country map, pass a coarser tolerance (the metres of one
pixel at the zoom shown). Exports round coordinates to 7 decimals (about 1 cm).
"""

from __future__ import annotations

import csv
import io
import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import shapely  # type: ignore[import-untyped]

from ctafleet.telematics.derive.events import iso_utc
from ctafleet.telematics.derive.geo import EARTH_RADIUS_M, plausible_position
from ctafleet.telematics.points import Point

DEFAULT_TOLERANCE_M = 10.0
GPX_NS = "http://www.topografix.com/GPX/1/1"
# Garmin's track-point extension: the usual home of speed and course in GPX 1.1.
GPXTPX_NS = "http://www.garmin.com/xmlschemas/TrackPointExtension/v2"
CSV_HEADER = ("time", "lat", "lon", "speed_mps", "course_deg", "altitude_m")

# Characters XML 1.0 cannot carry at all, even escaped.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_M_PER_DEG = EARTH_RADIUS_M * math.pi / 180.0


@dataclass(frozen=True, slots=True, kw_only=True)
class TrackPoint:
    time: datetime
    lat: float
    lon: float
    speed_mps: float | None = None
    course_deg: float | None = None
    altitude_m: float | None = None


def from_points(points: Iterable[Point]) -> list[TrackPoint]:
    """The positions of the points that have a usable fix, in their order."""
    return [
        TrackPoint(
            time=p.fix_time,
            lat=p.lat,
            lon=p.lon,
            speed_mps=p.speed_mps,
            course_deg=p.course_deg,
            altitude_m=p.altitude_m,
        )
        for p in points
        if p.has_fix and p.lat is not None and p.lon is not None
        if plausible_position(p.lat, p.lon)
    ]


def simplify(
    track: Sequence[TrackPoint], *, tolerance_m: float = DEFAULT_TOLERANCE_M
) -> list[TrackPoint]:
    """The points of `track` that keep its line within `tolerance_m`, always both ends."""
    n = len(track)
    if n < 3 or tolerance_m <= 0:
        return list(track)
    middle = track[n // 2]
    scale_x = _M_PER_DEG * math.cos(math.radians(middle.lat))
    lat = np.fromiter((p.lat for p in track), dtype=float, count=n)
    lon = np.fromiter((p.lon for p in track), dtype=float, count=n)
    # Longitude differences wrapped to +-180, so a track across the antimeridian stays whole.
    x = ((lon - middle.lon + 180.0) % 360.0 - 180.0) * scale_x
    y = (lat - middle.lat) * _M_PER_DEG
    # The index rides along as z: the simplifier keeps whole vertices, so it names the kept ones.
    line = shapely.linestrings(x, y, np.arange(n, dtype=float))
    kept = shapely.get_coordinates(
        shapely.simplify(line, tolerance_m, preserve_topology=False), include_z=True
    )
    indices = {int(i) for i in kept[:, 2]} | {0, n - 1}
    return [track[i] for i in sorted(indices)]


def to_geojson(track: Sequence[TrackPoint], *, name: str | None = None) -> dict[str, Any]:
    """A FeatureCollection: the track as a LineString (lon, lat), and per position in its
    properties `times` (ISO 8601 UTC), `speeds_mps`, `courses_deg` and `altitudes_m`."""
    if not track:
        return {"type": "FeatureCollection", "features": []}
    coordinates = [[round(p.lon, 7), round(p.lat, 7)] for p in track]
    geometry: dict[str, Any] = (
        {"type": "LineString", "coordinates": coordinates}
        if len(track) > 1
        else {"type": "Point", "coordinates": coordinates[0]}
    )
    properties = {
        "name": name,
        "times": [iso_utc(p.time) for p in track],
        "speeds_mps": [p.speed_mps for p in track],
        "courses_deg": [p.course_deg for p in track],
        "altitudes_m": [p.altitude_m for p in track],
    }
    feature = {"type": "Feature", "geometry": geometry, "properties": properties}
    return {"type": "FeatureCollection", "features": [feature]}


def to_gpx(track: Sequence[TrackPoint], *, name: str, creator: str = "CTAFleet") -> str:
    """A GPX 1.1 document with one track of one segment; speed and course, when known, in
    Garmin's TrackPointExtension (which GPX readers that do not know it ignore)."""

    # Declared on the root by hand: ElementTree's default_namespace refuses plain attributes.
    root = ET.Element(
        "gpx",
        {
            "version": "1.1",
            "creator": _xml_text(creator),
            "xmlns": GPX_NS,
            "xmlns:gpxtpx": GPXTPX_NS,
        },
    )
    metadata = ET.SubElement(root, "metadata")
    ET.SubElement(metadata, "name").text = _xml_text(name)
    if track:
        ET.SubElement(metadata, "time").text = iso_utc(track[0].time)
    trk = ET.SubElement(root, "trk")
    ET.SubElement(trk, "name").text = _xml_text(name)
    segment = ET.SubElement(trk, "trkseg")
    for p in track:
        pt = ET.SubElement(segment, "trkpt", {"lat": f"{p.lat:.7f}", "lon": f"{p.lon:.7f}"})
        if p.altitude_m is not None:
            ET.SubElement(pt, "ele").text = f"{p.altitude_m:.1f}"
        ET.SubElement(pt, "time").text = iso_utc(p.time)
        if p.speed_mps is not None or p.course_deg is not None:
            ext = ET.SubElement(ET.SubElement(pt, "extensions"), "gpxtpx:TrackPointExtension")
            if p.speed_mps is not None:
                ET.SubElement(ext, "gpxtpx:speed").text = f"{p.speed_mps:.2f}"
            if p.course_deg is not None:
                ET.SubElement(ext, "gpxtpx:course").text = f"{p.course_deg % 360.0:.1f}"
    body = ET.tostring(root, encoding="unicode")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + body + "\n"


def to_csv(track: Sequence[TrackPoint]) -> str:
    """CSV (RFC 4180): a header, then one row per position; unknown values are empty."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_HEADER)
    for p in track:
        writer.writerow(
            (
                iso_utc(p.time),
                f"{p.lat:.7f}",
                f"{p.lon:.7f}",
                _cell(p.speed_mps),
                _cell(p.course_deg),
                _cell(p.altitude_m),
            )
        )
    return out.getvalue()


def _cell(value: float | None) -> str:
    return "" if value is None else repr(float(value))


def _xml_text(text: str) -> str:
    return _NOT_XML.sub("", text)
