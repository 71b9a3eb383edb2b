"""Derived data: points per second through `advance`, as a ratio to a bare distance loop.

Builds a synthetic fleet (devices driving at 1-5 s reporting intervals with stops, traffic
halts, ignition, battery and the odd GPS jump) and times, in alternating rounds:

    limit         a loop that only computes the haversine distance between each device's
                  consecutive points: the least any odometer costs, with no state or rules
    advance       `advance` over each device's points in batches (what the worker does per
                  committed batch), carrying the state from batch to batch
    + geofences   the same with a tenant's geofences (polygons and circles, some with speed
                  limits) along the routes, as one `GeofenceSet`

and prints points/s for each (the median of the rounds) and the ratio advance / limit.

    .venv/bin/python bench/derive.py                    # 200,000 points, 3 rounds
    .venv/bin/python bench/derive.py --points 50000 --rounds 5 --batch 100

Goal: advance >= 0.1x of the limit, with or without 50 geofences: all the rules cost at most ten
bare distance computations per point (over 100,000 points/s on one core; a 300-vehicle fleet
reporting every second sends 300).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from shapely.geometry import Polygon  # type: ignore[import-untyped]

from ctafleet.telematics.derive import DeviceState, Geofence, GeofenceSet, Rules, advance
from ctafleet.telematics.derive.geo import destination, haversine_m
from ctafleet.telematics.points import Point

GOALS = {"advance": 0.1, "advance + geofences": 0.1}
T0 = datetime(2024, 5, 6, 6, 0, tzinfo=UTC)
CENTRE = (60.17, 24.94)


def fleet(total: int, devices: int, seed: int = 7) -> dict[str, list[Point]]:
    rng = random.Random(seed)
    per_device = total // devices
    out: dict[str, list[Point]] = {}
    for n in range(devices):
        uid = f"bench-{n:03d}"
        lat, lon = destination(*CENTRE, rng.uniform(0, 360), rng.uniform(0, 8000))
        t = T0
        speed = 0.0
        bearing = rng.uniform(0, 360)
        battery = 100.0
        ignition = False
        points: list[Point] = []
        while len(points) < per_device:
            # A drive of 5-30 minutes, with halts, then a stop of 2-20 minutes.
            ignition = True
            every = rng.choice((1.0, 2.0, 5.0))
            target = rng.choice((8.0, 14.0, 22.0, 30.0))
            halt = 0.0
            for _ in range(int(rng.uniform(300, 1800) / every)):
                if rng.random() < 0.01:
                    bearing = (bearing + rng.uniform(-90, 90)) % 360
                if rng.random() < 0.01:
                    target = rng.choice((8.0, 14.0, 22.0, 30.0))
                if halt > 0:
                    halt -= every
                    speed = 0.0
                else:
                    if rng.random() < 0.003:
                        halt = rng.uniform(20, 90)
                    change = max(-1.5 * every, min(1.5 * every, target - speed))
                    speed = max(0.0, speed + change + rng.uniform(-0.3, 0.3))
                lat, lon = destination(lat, lon, bearing, speed * every)
                t += timedelta(seconds=every)
                battery = max(5.0, battery - 0.001)
                fix_lat, fix_lon = lat, lon
                if rng.random() < 0.0005:
                    fix_lat, fix_lon = destination(lat, lon, rng.uniform(0, 360), 40_000)
                points.append(
                    Point(
                        device_uid=uid,
                        fix_time=t,
                        lat=fix_lat,
                        lon=fix_lon,
                        speed_mps=speed,
                        course_deg=bearing,
                        accuracy_m=rng.uniform(3, 15),
                        battery_pct=round(battery, 1),
                        ignition=ignition,
                    )
                )
            ignition = False
            speed = 0.0
            for _ in range(int(rng.uniform(120, 1200) / 30)):
                t += timedelta(seconds=30)
                points.append(
                    Point(
                        device_uid=uid,
                        fix_time=t,
                        lat=lat,
                        lon=lon,
                        speed_mps=0.0,
                        accuracy_m=rng.uniform(3, 15),
                        battery_pct=round(battery, 1),
                        ignition=ignition,
                    )
                )
        out[uid] = points[:per_device]
    return out


def geofences(count: int, seed: int = 11) -> GeofenceSet:
    rng = random.Random(seed)
    items = []
    for i in range(count):
        lat, lon = destination(*CENTRE, rng.uniform(0, 360), rng.uniform(0, 12_000))
        limit = rng.choice((None, None, 8.0, 14.0))
        if i % 2:
            items.append(
                Geofence.from_circle(
                    id=uuid.UUID(int=i),
                    name=f"circle {i}",
                    lat=lat,
                    lon=lon,
                    radius_m=rng.uniform(100, 1500),
                    speed_limit_mps=limit,
                )
            )
        else:
            ring = [
                destination(lat, lon, bearing, rng.uniform(300, 1500))
                for bearing in range(0, 360, 30)
            ]
            items.append(
                Geofence(
                    id=uuid.UUID(int=i),
                    name=f"polygon {i}",
                    geometry=Polygon([(b, a) for a, b in ring]),
                    speed_limit_mps=limit,
                )
            )
    return GeofenceSet(items)


def limit_loop(data: dict[str, list[Point]]) -> float:
    total = 0.0
    for points in data.values():
        prev_lat = prev_lon = None
        for p in points:
            lat, lon = p.lat, p.lon
            if lat is None or lon is None:
                continue
            if prev_lat is not None and prev_lon is not None:
                total += haversine_m(prev_lat, prev_lon, lat, lon)
            prev_lat, prev_lon = lat, lon
    return total


def advance_all(
    data: dict[str, list[Point]], *, batch: int, rules: Rules, zones: GeofenceSet
) -> float:
    total = 0.0
    for points in data.values():
        state: DeviceState | None = None
        for i in range(0, len(points), batch):
            result = advance(state, points[i : i + batch], rules=rules, geofences=zones)
            state = result.state
            total += len(result.events) + len(result.trips)
    return total


def timed(fn: Callable[[], float]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=200_000)
    parser.add_argument("--devices", type=int, default=20)
    parser.add_argument("--batch", type=int, default=200, help="points per advance call")
    parser.add_argument("--geofences", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    data = fleet(args.points, args.devices)
    n = sum(len(v) for v in data.values())
    zones = geofences(args.geofences)
    rules = Rules(speed_limit_mps=25.0)
    none = GeofenceSet([])
    runs: dict[str, Callable[[], float]] = {
        "limit": lambda: limit_loop(data),
        "advance": lambda: advance_all(data, batch=args.batch, rules=rules, zones=none),
        "advance + geofences": lambda: advance_all(
            data, batch=args.batch, rules=rules, zones=zones
        ),
    }
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, fn in runs.items():
            seconds[name].append(timed(fn))

    trips = sum(
        len(advance(None, pts, rules=rules, geofences=zones).trips) for pts in data.values()
    )
    print(
        f"derive: {n:,} points, {args.devices} devices, batches of {args.batch}, "
        f"{args.geofences} geofences, {trips} trips, median of {args.rounds} rounds"
    )
    limit_rate = n / statistics.median(seconds["limit"])
    for name in runs:
        rate = n / statistics.median(seconds[name])
        line = f"  {name:<22} {rate:>12,.0f} points/s"
        if name != "limit":
            ratio = rate / limit_rate
            goal = GOALS[name]
            line += f"  {ratio:5.3f}x  (goal >= {goal}x: {'ok' if ratio >= goal else 'MISSED'})"
        print(line)


if __name__ == "__main__":
    main()
