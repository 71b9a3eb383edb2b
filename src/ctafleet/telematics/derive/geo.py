"""Distances and local projections on a spherical Earth.

A sphere with the mean radius is within 0.5 % of the ellipsoid everywhere, well inside GPS
error for the distances a vehicle covers between two fixes. Arguments are positional: these
run once or twice per point on the hot path.
"""

from __future__ import annotations

import math

# IUGG mean Earth radius.
EARTH_RADIUS_M = 6_371_008.8

_RAD = math.pi / 180.0
_DEG = 180.0 / math.pi


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float, /) -> float:
    """Great-circle distance in metres between two positions in degrees."""
    p1 = lat1 * _RAD
    p2 = lat2 * _RAD
    a = math.sin((p2 - p1) * 0.5) ** 2 + math.cos(p1) * math.cos(p2) * (
        math.sin((lon2 - lon1) * _RAD * 0.5) ** 2
    )
    return 2.0 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


def bearing_deg(lat1: float, lon1: float, lat2: float, lon2: float, /) -> float:
    """Initial course from the first position to the second, degrees clockwise from north."""
    p1 = lat1 * _RAD
    p2 = lat2 * _RAD
    dl = (lon2 - lon1) * _RAD
    y = math.sin(dl) * math.cos(p2)
    x = math.cos(p1) * math.sin(p2) - math.sin(p1) * math.cos(p2) * math.cos(dl)
    return (math.atan2(y, x) * _DEG) % 360.0


def destination(
    lat: float, lon: float, bearing: float, distance_m: float, /
) -> tuple[float, float]:
    """The position `distance_m` from (lat, lon) along the initial course `bearing` (degrees)."""
    p1 = lat * _RAD
    c = distance_m / EARTH_RADIUS_M
    th = bearing * _RAD
    sin_p2 = math.sin(p1) * math.cos(c) + math.cos(p1) * math.sin(c) * math.cos(th)
    p2 = math.asin(max(-1.0, min(1.0, sin_p2)))
    dl = math.atan2(math.sin(th) * math.sin(c) * math.cos(p1), math.cos(c) - math.sin(p1) * sin_p2)
    return p2 * _DEG, _normal_lon(lon + dl * _DEG)


def to_local(lat: float, lon: float, lat0: float, lon0: float, /) -> tuple[float, float]:
    """Azimuthal-equidistant (x east, y north) metres around (lat0, lon0).

    Distances and directions from the centre are exact, which is what a circle around it needs.
    """
    d = haversine_m(lat0, lon0, lat, lon)
    th = bearing_deg(lat0, lon0, lat, lon) * _RAD
    return d * math.sin(th), d * math.cos(th)


def from_local(x: float, y: float, lat0: float, lon0: float, /) -> tuple[float, float]:
    """The inverse of `to_local`: (lat, lon) of the point x metres east and y north."""
    return destination(lat0, lon0, math.atan2(x, y) * _DEG, math.hypot(x, y))


def plausible_position(lat: float, lon: float, /) -> bool:
    """In range, finite and not (0, 0), which devices send when they have no fix."""
    return -90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0 and not (lat == 0.0 and lon == 0.0)


def _normal_lon(lon: float) -> float:
    return (lon + 180.0) % 360.0 - 180.0
