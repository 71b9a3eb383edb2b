"""Geofences: polygons or circles in WGS 84, with an optional speed limit and schedule.

Geometry is in GeoJSON axis order (x = longitude, y = latitude). A circle keeps its centre and
radius, and containment in it is the exact great-circle distance; its polygon (for maps and
exports) is a 64-gon built in an azimuthal-equidistant projection around the centre, so the
radius is right at any latitude (degrees of longitude shrink with cos(latitude); a buffer in
degrees would be an ellipse). Polygons are prepared once, and every check first compares the
bounding box, which is all most points of a fleet ever need.

A schedule makes a geofence exist only inside its weekly windows: outside them the vehicle is
outside it (an exit when a window closes on a vehicle inside, an enter when it opens), and its
speed limit does not apply.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, time
from math import floor
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import shapely  # type: ignore[import-untyped]
from shapely.geometry import MultiPolygon, Polygon, shape  # type: ignore[import-untyped]

from ctafleet.telematics.derive.geo import EARTH_RADIUS_M, from_local, haversine_m

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# 16 segments per quarter: the polygon is at most 0.12 % inside the true circle.
_CIRCLE_QUAD_SEGS = 16
# About a centimetre, so float rounding never puts a point on the edge outside its box.
_BOX_MARGIN_DEG = 1e-7


@dataclass(frozen=True, slots=True, kw_only=True)
class Window:
    """Active on `days` (0 = Monday) from `start` to `end`, local wall-clock time.

    `end` at or before `start` runs past midnight into the next day; `start == end` is 24 h.
    """

    days: frozenset[int]
    start: time
    end: time

    def __post_init__(self) -> None:
        if not self.days or not self.days <= frozenset(range(7)):
            raise ValueError("schedule window: days must be a non-empty subset of 0..6")
        if self.start.tzinfo is not None or self.end.tzinfo is not None:
            raise ValueError("schedule window: times are local wall-clock times, without zone")


@dataclass(frozen=True, slots=True, kw_only=True)
class Schedule:
    """Weekly windows in an IANA time zone (so daylight-saving changes move with the clock)."""

    timezone: str
    windows: tuple[Window, ...]
    _zone: ZoneInfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            zone = ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"schedule: unknown time zone {self.timezone!r}") from exc
        if not self.windows:
            raise ValueError("schedule: at least one window (no schedule: always active)")
        object.__setattr__(self, "_zone", zone)

    def active_at(self, when: datetime) -> bool:
        return self.active_ts(when.timestamp())

    def active_ts(self, t: float) -> bool:
        """Whether the epoch time `t` falls inside a window."""
        local = datetime.fromtimestamp(t, self._zone)
        day = local.weekday()
        clock = local.time()
        for w in self.windows:
            if w.start < w.end:
                if day in w.days and w.start <= clock < w.end:
                    return True
            elif (day in w.days and clock >= w.start) or (
                (day - 1) % 7 in w.days and clock < w.end
            ):
                return True
        return False

    def to_json(self) -> dict[str, Any]:
        return {
            "timezone": self.timezone,
            "windows": [
                {
                    "days": [DAY_NAMES[d] for d in sorted(w.days)],
                    "start": w.start.isoformat(timespec="minutes"),
                    "end": w.end.isoformat(timespec="minutes"),
                }
                for w in self.windows
            ],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Schedule:
        """`{"timezone": "Europe/Helsinki", "windows": [{"days": ["mon", ...], "start":
        "07:00", "end": "09:00"}]}`."""
        try:
            windows = tuple(
                Window(
                    days=frozenset(DAY_NAMES.index(str(d).lower()[:3]) for d in w["days"]),
                    start=time.fromisoformat(w["start"]),
                    end=time.fromisoformat(w["end"]),
                )
                for w in data["windows"]
            )
            return cls(timezone=data["timezone"], windows=windows)
        except (KeyError, TypeError) as exc:
            raise ValueError(f"schedule: malformed ({exc})") from exc


@dataclass(frozen=True, slots=True, kw_only=True)
class Circle:
    lat: float
    lon: float
    radius_m: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Geofence:
    """A named area. Build circles with `from_circle`; `geometry` is then their polygon."""

    id: uuid.UUID
    name: str
    # shapely Polygon or MultiPolygon, lon/lat degrees.
    geometry: Any
    speed_limit_mps: float | None = None
    schedule: Schedule | None = None
    # Overrides `Rules.dwell_s` for this geofence.
    dwell_s: float | None = None
    circle: Circle | None = None
    # (min_lon, min_lat, max_lon, max_lat)
    bounds: tuple[float, float, float, float] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        g = self.geometry
        if not isinstance(g, Polygon | MultiPolygon) or g.is_empty:
            raise ValueError(f"geofence {self.name!r}: geometry must be a non-empty polygon")
        if not g.is_valid:
            reason = shapely.is_valid_reason(g)
            raise ValueError(f"geofence {self.name!r}: invalid polygon ({reason})")
        for value, what in ((self.speed_limit_mps, "speed_limit_mps"), (self.dwell_s, "dwell_s")):
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"geofence {self.name!r}: {what} must be positive")
        if self.circle is not None:
            bounds = _circle_bounds(self.circle)
        else:
            x0, y0, x1, y1 = g.bounds
            m = _BOX_MARGIN_DEG
            bounds = (x0 - m, y0 - m, x1 + m, y1 + m)
        object.__setattr__(self, "bounds", bounds)
        shapely.prepare(g)

    @classmethod
    def from_circle(
        cls,
        *,
        id: uuid.UUID,
        name: str,
        lat: float,
        lon: float,
        radius_m: float,
        speed_limit_mps: float | None = None,
        schedule: Schedule | None = None,
        dwell_s: float | None = None,
    ) -> Geofence:
        if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
            raise ValueError(f"geofence {name!r}: centre ({lat}, {lon}) out of range")
        if not (math.isfinite(radius_m) and 0 < radius_m < EARTH_RADIUS_M):
            raise ValueError(f"geofence {name!r}: radius must be positive metres")
        local = shapely.Point(0.0, 0.0).buffer(radius_m, quad_segs=_CIRCLE_QUAD_SEGS)
        ring = []
        for x, y in local.exterior.coords:
            vlat, vlon = from_local(x, y, lat, lon)
            ring.append((vlon, vlat))
        return cls(
            id=id,
            name=name,
            geometry=Polygon(ring),
            speed_limit_mps=speed_limit_mps,
            schedule=schedule,
            dwell_s=dwell_s,
            circle=Circle(lat=lat, lon=lon, radius_m=radius_m),
        )

    @classmethod
    def from_geojson(
        cls,
        data: Mapping[str, Any],
        *,
        id: uuid.UUID | None = None,
        name: str | None = None,
        radius_m: float | None = None,
    ) -> Geofence:
        """A Feature (its properties may hold id, name, radius_m, speed_limit_mps, dwell_s,
        schedule) or a bare geometry: Polygon, MultiPolygon, or Point with a radius."""
        try:
            if data.get("type") == "Feature":
                geometry = data["geometry"]
                props: Mapping[str, Any] = data.get("properties") or {}
            else:
                geometry, props = data, {}
            raw_id = props.get("id") or data.get("id")
            if id is None and raw_id is None:
                raise ValueError("geofence GeoJSON: no id (in the Feature, or as an argument)")
            gid = id or uuid.UUID(str(raw_id))
            gname = name if name is not None else str(props.get("name") or "")
            schedule = props.get("schedule")
            options: dict[str, Any] = {
                "speed_limit_mps": _float_or_none(props.get("speed_limit_mps")),
                "schedule": Schedule.from_json(schedule) if schedule else None,
                "dwell_s": _float_or_none(props.get("dwell_s")),
            }
            kind = geometry["type"]
            if kind == "Point":
                lon, lat = (float(c) for c in geometry["coordinates"][:2])
                radius = radius_m if radius_m is not None else props.get("radius_m")
                if radius is None:
                    raise ValueError("a Point geofence needs radius_m")
                return cls.from_circle(
                    id=gid, name=gname, lat=lat, lon=lon, radius_m=float(radius), **options
                )
            if kind not in ("Polygon", "MultiPolygon"):
                raise ValueError(f"geometry type {kind!r} is not an area")
            polygon = shapely.force_2d(shape(geometry))
        except (KeyError, TypeError, IndexError, AttributeError) as exc:
            raise ValueError(f"geofence GeoJSON: malformed ({exc!r})") from exc
        return cls(id=gid, name=gname, geometry=polygon, **options)

    def to_geojson(self) -> dict[str, Any]:
        """A Feature that `from_geojson` reads back into an equal geofence."""
        props: dict[str, Any] = {"id": str(self.id), "name": self.name}
        if self.circle is not None:
            geometry: dict[str, Any] = {
                "type": "Point",
                "coordinates": [self.circle.lon, self.circle.lat],
            }
            props["radius_m"] = self.circle.radius_m
        else:
            geometry = json.loads(shapely.to_geojson(self.geometry))
        if self.speed_limit_mps is not None:
            props["speed_limit_mps"] = self.speed_limit_mps
        if self.dwell_s is not None:
            props["dwell_s"] = self.dwell_s
        if self.schedule is not None:
            props["schedule"] = self.schedule.to_json()
        return {"type": "Feature", "id": str(self.id), "geometry": geometry, "properties": props}

    def contains(self, lat: float, lon: float) -> bool:
        """Whether the position is inside (the boundary counts as inside), schedule aside."""
        x0, y0, x1, y1 = self.bounds
        if not (y0 <= lat <= y1 and x0 <= lon <= x1):
            return False
        return self._contains_unboxed(lat, lon)

    def _contains_unboxed(self, lat: float, lon: float) -> bool:
        c = self.circle
        if c is not None:
            return haversine_m(c.lat, c.lon, lat, lon) <= c.radius_m
        return bool(shapely.intersects_xy(self.geometry, lon, lat))

    def active_ts(self, t: float) -> bool:
        return self.schedule is None or self.schedule.active_ts(t)


class GeofenceSet:
    """Geofences indexed for containment: build once per tenant and pass it for every device.

    The index is a grid of 0.01-degree cells (about a kilometre) listing the geofences whose
    box overlaps each cell, so a point looks at one cell's few candidates whatever the count;
    geofences too large for the grid (a whole city) are checked by their box on every point.
    """

    __slots__ = ("_by_key", "_grid", "_items", "_wide")

    def __init__(self, geofences: Iterable[Geofence]) -> None:
        self._items = tuple(geofences)
        if len({g.id for g in self._items}) != len(self._items):
            raise ValueError("geofences: ids must be unique")
        self._by_key = {str(g.id): g for g in self._items}
        # Each entry: box, geofence, the string form of its id (what device state stores) and
        # its position in the set (answers keep the set's order).
        self._grid: dict[int, list[_Entry]] = {}
        self._wide: list[_Entry] = []
        for n, g in enumerate(self._items):
            entry: _Entry = (*g.bounds, g, str(g.id), n)
            x0, y0, x1, y1 = g.bounds
            rows = range(_cell(y0), _cell(y1) + 1)
            cols = range(_cell(x0), _cell(x1) + 1)
            if len(rows) * len(cols) > _GRID_MAX_CELLS:
                self._wide.append(entry)
                continue
            for i in rows:
                for j in cols:
                    self._grid.setdefault(i * _ROW + j, []).append(entry)

    @classmethod
    def of(cls, geofences: Iterable[Geofence] | GeofenceSet) -> GeofenceSet:
        return geofences if isinstance(geofences, GeofenceSet) else cls(geofences)

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Geofence]:
        return iter(self._items)

    def get(self, key: str) -> Geofence | None:
        """The geofence whose id has this string form."""
        return self._by_key.get(key)

    def containing(self, lat: float, lon: float, t: float) -> list[Geofence]:
        """The geofences active at epoch time `t` that contain the position, in set order."""
        return [g for g, _ in self.containing_keyed(lat, lon, t)]

    def containing_keyed(self, lat: float, lon: float, t: float) -> list[tuple[Geofence, str]]:
        """`containing`, each with the string form of its id."""
        cell = self._grid.get(floor(lat * _GRID_PER_DEG) * _ROW + floor(lon * _GRID_PER_DEG))
        wide = self._wide
        if cell is None and not wide:
            return []
        candidates = cell or ()
        if wide:
            candidates = sorted((*candidates, *wide), key=lambda e: e[6])
        found = []
        for x0, y0, x1, y1, g, key, _ in candidates:
            if (
                y0 <= lat <= y1
                and x0 <= lon <= x1
                and (g.schedule is None or g.schedule.active_ts(t))
                and g._contains_unboxed(lat, lon)
            ):
                found.append((g, key))
        return found


_Entry = tuple[float, float, float, float, Geofence, str, int]
_GRID_PER_DEG = 100.0
_GRID_MAX_CELLS = 2500
# Cell (i, j) is key i * _ROW + j: longitudes span fewer than _ROW cells.
_ROW = 100_000


def _cell(degrees: float) -> int:
    return floor(degrees * _GRID_PER_DEG)


def _circle_bounds(c: Circle) -> tuple[float, float, float, float]:
    ang = c.radius_m / EARTH_RADIUS_M
    dlat = math.degrees(ang) + _BOX_MARGIN_DEG
    lat0, lat1 = c.lat - dlat, c.lat + dlat
    if lat0 <= -90.0 or lat1 >= 90.0:
        # A pole is inside: every longitude is.
        return (-180.0, max(lat0, -90.0), 180.0, min(lat1, 90.0))
    # The widest longitude extent of a spherical circle (at slightly poleward of its centre).
    s = math.sin(ang) / math.cos(math.radians(c.lat))
    dlon = 180.0 if s >= 1.0 else math.degrees(math.asin(s)) + _BOX_MARGIN_DEG
    lon0, lon1 = c.lon - dlon, c.lon + dlon
    if lon0 < -180.0 or lon1 > 180.0:
        # Across the antimeridian: the box spans every longitude, the distance check decides.
        lon0, lon1 = -180.0, 180.0
    return (lon0, lat0, lon1, lat1)


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)
