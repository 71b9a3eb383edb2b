"""The derived-data engine: one device's points in, trips, stops, events and odometer out.

Pure: no database, no clock, no randomness. `advance` reads the device's `DeviceState` and
the new points and nothing else, and emits nothing at the end of a batch that it would not
emit mid-batch, so where batches split never matters:

    advance(s, A + B)  ==  advance(advance(s, A).state, B)     (trips, stops, events, odometer)

which is what makes a replay from a checkpoint (`Trip.state_after`) or a redelivered batch
(points at or before `state.last_t` are skipped) derive the same things again, with the same
event keys.

Per point, in this order:

1. Contact: a silence of `offline_after_s` or more yields device_offline (the same event the
   periodic `offline` sweep reports) and device_online, and ends episodes: what happened while
   the device was silent is unknown. Engine time accrues while the ignition was on.
2. Trip end: a trip closes at the moment the vehicle became stationary (or its ignition went
   off) once that has lasted `min_stop_s`; any point's time counts, so heartbeats of a parked
   vehicle close its trip. A trip shorter than `min_trip_distance_m` is dropped and its stop
   simply continues. No accepted fix for `min_stop_s` (silence, heartbeats only, or fixes the
   filters reject) ends the trip at the last fix: a device reports while it drives.
3. Ignition, battery and device alarms (used from every point, with a fix or without).
4. The fix, if it passes the filters (coordinates in range and not 0/0, accuracy, and a speed
   from the previous accepted fix no vehicle reaches, unless `relocate_after` rejected fixes
   agree that the vehicle is elsewhere): odometer, geofences, overspeed, harsh events from
   speed changes, trip start and trip figures.
5. Idling: ignition on and the last accepted fix not moving.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from ctafleet.telematics.derive.events import Event, EventType, event_key
from ctafleet.telematics.derive.geo import haversine_m
from ctafleet.telematics.derive.geofences import Geofence, GeofenceSet
from ctafleet.telematics.derive.rules import Rules
from ctafleet.telematics.derive.state import DeviceState
from ctafleet.telematics.derive.trips import Stop, Trip
from ctafleet.telematics.points import Point

__all__ = ["Advance", "DeviceState", "advance", "offline"]

# Traccar's alarm names (the `alarm` attribute, comma-separated when several).
_ALARMS: dict[str, EventType] = {
    "hardAcceleration": "harsh_acceleration",
    "hardBraking": "harsh_braking",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Advance:
    """What a batch of points changed."""

    state: DeviceState
    trips: list[Trip] = field(default_factory=list)
    stops: list[Stop] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    # The vehicle's distance (the device's odometer since its first reading when it reports
    # one, else filtered GPS distance) and engine time, both cumulative since the state began.
    odometer_m: float = 0.0
    engine_seconds: float = 0.0
    # The trip in progress (ending at the newest fix, `state_after` None), if any.
    open_trip: Trip | None = None


def advance(
    state: DeviceState | None,
    points: Sequence[Point],
    *,
    rules: Rules,
    geofences: Sequence[Geofence] | GeofenceSet,
) -> Advance:
    """Derive what `points` (one device's, after `state`) add to `state`, which stays as it was.

    `state` None starts a new device. Points are taken in fix-time order (sorted here if they
    are not); those at or before `state.last_t` were derived already and are skipped.
    Pass geofences as a `GeofenceSet` when the same ones serve many devices.
    """
    if state is None:
        if not points:
            raise ValueError("advance: neither a state nor points to start one")
        state = DeviceState(device_uid=points[0].device_uid)
    run = _Run(state.copy(), rules, GeofenceSet.of(geofences))
    ordered = all(points[i].fix_time <= points[i + 1].fix_time for i in range(len(points) - 1))
    for point in points if ordered else sorted(points, key=lambda p: p.fix_time):
        run.step(point)
    s = run.s
    return Advance(
        state=s,
        trips=run.trips,
        stops=run.stops,
        events=run.events,
        odometer_m=s.odometer_m,
        engine_seconds=s.engine_s,
        open_trip=run.open_trip(),
    )


def offline(state: DeviceState, *, now: datetime, rules: Rules) -> list[Event]:
    """The device_offline event for a device silent `offline_after_s` or more at `now`.

    A periodic sweep calls this for every device; it changes nothing, and returns the same
    event (same key) on every sweep until a point arrives, so the consumer's deduplication on
    key makes it one notification. `advance` reports the same event when the silence ends.
    """
    last = state.last_t
    if last is None or now.timestamp() - last < rules.offline_after_s:
        return []
    return [_offline_event(state, last, rules)]


def _dt(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


def _offline_event(s: DeviceState, last: float, rules: Rules) -> Event:
    return Event(
        device_uid=s.device_uid,
        type="device_offline",
        time=_dt(last + rules.offline_after_s),
        lat=s.fix_lat,
        lon=s.fix_lon,
        limit=rules.offline_after_s,
        key=event_key(kind="device_offline", device_uid=s.device_uid, when=_dt(last)),
    )


class _Run:
    """One `advance` call: the state being advanced and what it has produced so far."""

    __slots__ = ("closed", "events", "gset", "has_zones", "r", "s", "stops", "trips")

    def __init__(self, s: DeviceState, r: Rules, gset: GeofenceSet) -> None:
        self.s = s
        self.r = r
        self.gset = gset
        self.has_zones = len(gset) > 0
        self.trips: list[Trip] = []
        self.stops: list[Stop] = []
        self.events: list[Event] = []
        # Trips closed by the current point: they get the state after it as their checkpoint.
        self.closed: list[Trip] = []

    def emit(
        self,
        kind: EventType,
        t: float,
        lat: float | None,
        lon: float | None,
        *,
        value: float | None = None,
        duration_s: float | None = None,
        limit: float | None = None,
        geofence: Geofence | None = None,
        key_t: float | None = None,
    ) -> None:
        when = _dt(t)
        gid = geofence.id if geofence is not None else None
        key_when = when if key_t is None else _dt(key_t)
        self.events.append(
            Event(
                device_uid=self.s.device_uid,
                type=kind,
                time=when,
                lat=lat,
                lon=lon,
                value=value,
                duration_s=duration_s,
                limit=limit,
                geofence_id=gid,
                key=event_key(
                    kind=kind, device_uid=self.s.device_uid, when=key_when, geofence_id=gid
                ),
            )
        )

    def step(self, p: Point) -> None:
        s = self.s
        r = self.r
        if p.device_uid != s.device_uid:
            raise ValueError(f"advance: a point of {p.device_uid!r} among {s.device_uid!r}'s")
        t = p.fix_time.timestamp()
        last = s.last_t
        if last is not None:
            if t <= last:
                return
            gap = t - last
            if gap >= r.offline_after_s:
                self.silence(t, last, gap)
            elif s.ignition:
                s.engine_s += gap
        if s.trip_t is not None:
            if s.cand_t is None and s.fix_t is not None and t - s.fix_t >= r.min_stop_s:
                self.stationary(s.fix_t, s.fix_lat, s.fix_lon)
            if s.cand_t is not None and t - s.cand_t >= r.min_stop_s:
                self.close_trip()
        ignition = p.ignition
        if ignition is not None and ignition is not s.ignition:
            self.ignition(t, ignition)
        if p.battery_pct is not None:
            self.battery(t, p.battery_pct)
        alarms: list[EventType] = []
        if p.attributes:
            alarm = p.attributes.get("alarm")
            if isinstance(alarm, str):
                alarms = self.alarms(alarm)
        if p.has_fix:
            self.fix(p, t)
        for kind in alarms:
            self.emit(kind, t, s.fix_lat, s.fix_lon)
        if s.ignition is True and not s.moving and s.fix_t is not None:
            if s.idle_t is None:
                s.idle_t, s.idle_lat, s.idle_lon = t, s.fix_lat, s.fix_lon
            s.idle_last_t = t
        elif s.idle_t is not None:
            self.end_idle()
        s.last_t = t
        if self.closed:
            snapshot = s.to_json()
            self.trips.extend(replace(trip, state_after=snapshot) for trip in self.closed)
            self.closed.clear()

    def silence(self, t: float, last: float, gap: float) -> None:
        s = self.s
        self.events.append(_offline_event(s, last, self.r))
        self.emit("device_online", t, s.fix_lat, s.fix_lon, duration_s=gap)
        if s.over_t is not None:
            self.end_overspeed()
        if s.idle_t is not None:
            self.end_idle()
        s.harsh_kind = None

    def ignition(self, t: float, on: bool) -> None:
        s = self.s
        if on:
            s.ignition_wired = True
            if s.ignition is False and s.trip_t is None and s.fix_t is not None:
                self.start_trip(t, s.fix_lat, s.fix_lon, s.odometer_m)
        elif s.ignition is True and s.trip_t is not None and s.cand_t is None:
            self.stationary(t, s.fix_lat, s.fix_lon)
        s.ignition = on

    def battery(self, t: float, pct: float) -> None:
        s = self.s
        r = self.r
        if s.battery_low:
            if pct > r.low_battery_pct + r.battery_recover_pct:
                s.battery_low = False
        elif pct < r.low_battery_pct:
            s.battery_low = True
            self.emit("low_battery", t, s.fix_lat, s.fix_lon, value=pct, limit=r.low_battery_pct)

    def alarms(self, alarm: str) -> list[EventType]:
        s = self.s
        found: list[EventType] = []
        for name in alarm.split(","):
            kind = _ALARMS.get(name.strip())
            if kind is not None and kind not in found:
                found.append(kind)
                if kind not in s.harsh_alarms:
                    s.harsh_alarms = tuple(sorted((*s.harsh_alarms, kind)))
        return found

    def fix(self, p: Point, t: float) -> None:
        s = self.s
        r = self.r
        lat = p.lat
        lon = p.lon
        if lat is None or lon is None:
            return
        if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0) or (lat == 0.0 and lon == 0.0):
            return
        accuracy = p.accuracy_m
        if accuracy is None and p.hdop is not None:
            accuracy = p.hdop * r.hdop_to_m
        if accuracy is not None and accuracy > r.max_accuracy_m:
            return

        prev_t = s.fix_t
        prev_lat = s.fix_lat
        prev_lon = s.fix_lon
        jumped = False
        dt = d = 0.0
        if prev_t is not None and prev_lat is not None and prev_lon is not None:
            dt = t - prev_t
            d = haversine_m(prev_lat, prev_lon, lat, lon)
            if d > r.max_plausible_speed_mps * dt:
                if not self.relocated(t, lat, lon):
                    return
                jumped = True
            elif s.rej_n:
                s.rej_n = 0
                s.rej_t = s.rej_lat = s.rej_lon = None

        reported = p.speed_mps
        if reported is not None and not 0.0 <= reported <= r.max_plausible_speed_mps:
            reported = None
        if reported is not None:
            v = reported
        elif dt > 0.0 and not jumped:
            v = d / dt
        else:
            v = 0.0
        moving = v >= r.moving_speed_mps

        odo_before = s.odometer_m
        device_odo = p.odometer_m
        if device_odo is not None and 0.0 <= device_odo < float("inf"):
            last_odo = s.dev_odo_m
            if (
                last_odo is not None
                and s.dev_odo_t is not None
                and last_odo
                <= device_odo
                <= last_odo + r.max_plausible_speed_mps * (t - s.dev_odo_t)
            ):
                s.odometer_m += device_odo - last_odo
            # Else the first reading, a reset or a replaced device: a new baseline.
            s.dev_odo_m = device_odo
            s.dev_odo_t = t
        elif s.dev_odo_m is None:
            odo_lat = s.odo_lat
            odo_lon = s.odo_lon
            if jumped or odo_lat is None or odo_lon is None:
                s.odo_lat, s.odo_lon = lat, lon
            elif moving:
                # Counted from where counting last stopped: a parked vehicle's drift adds nothing.
                same = odo_lat == prev_lat and odo_lon == prev_lon
                s.odometer_m += d if same else haversine_m(odo_lat, odo_lon, lat, lon)
                s.odo_lat, s.odo_lon = lat, lon

        s.fix_t, s.fix_lat, s.fix_lon = t, lat, lon
        prev_speed = s.fix_speed
        s.fix_speed = reported
        s.moving = moving

        limit = r.speed_limit_mps
        if self.has_zones:
            inside = self.gset.containing_keyed(lat, lon, t)
            if inside or s.inside:
                self.geofences(t, lat, lon, inside)
            for g, _ in inside:
                zone = g.speed_limit_mps
                if zone is not None and (limit is None or zone < limit):
                    limit = zone
        elif s.inside:
            # Geofences no longer configured are forgotten without an exit.
            s.inside = {}
        if limit is not None and v > limit:
            if s.over_t is None:
                s.over_t, s.over_lat, s.over_lon = t, lat, lon
                s.over_max = v
                s.over_limit = limit
            else:
                if v > s.over_max:
                    s.over_max = v
                if limit < s.over_limit:
                    s.over_limit = limit
            s.over_last_t = t
        elif s.over_t is not None:
            self.end_overspeed()

        harsh: EventType | None = None
        if reported is not None and prev_speed is not None and 0.0 < dt <= r.harsh_window_s:
            accel = (reported - prev_speed) / dt
            if accel >= r.harsh_accel_mps2:
                harsh = "harsh_acceleration"
            elif accel <= r.harsh_brake_mps2:
                harsh = "harsh_braking"
            if harsh is not None and harsh in s.harsh_alarms:
                harsh = None
            if harsh is not None and harsh != s.harsh_kind:
                threshold = r.harsh_accel_mps2 if accel > 0 else r.harsh_brake_mps2
                self.emit(harsh, t, lat, lon, value=accel, limit=threshold)
        s.harsh_kind = harsh

        if s.trip_t is None:
            far = (
                s.stop_lat is not None
                and s.stop_lon is not None
                and haversine_m(s.stop_lat, s.stop_lon, lat, lon) > r.min_trip_distance_m
            )
            if moving or far:
                if prev_t is not None and t - prev_t <= r.min_stop_s and not jumped:
                    # Departure: the last fix before moving.
                    self.start_trip(prev_t, prev_lat, prev_lon, odo_before)
                else:
                    self.start_trip(t, lat, lon, s.odometer_m)
            elif s.stop_t is None:
                s.stop_t, s.stop_lat, s.stop_lon = t, lat, lon
        trip_t = s.trip_t
        if trip_t is not None:
            step = t - (prev_t if prev_t is not None and prev_t > trip_t else trip_t)
            if v > s.trip_max_speed:
                s.trip_max_speed = v
            cand_t = s.cand_t
            if moving or (
                cand_t is not None
                and s.cand_lat is not None
                and s.cand_lon is not None
                and haversine_m(s.cand_lat, s.cand_lon, lat, lon) > r.min_trip_distance_m
            ):
                if cand_t is None:
                    s.trip_driving_s += step
                elif s.ignition is False and s.ignition_wired:
                    # Rolling with the engine off (towed, on a ferry): still the stop.
                    s.trip_pending_s += step
                else:
                    # The halt was part of the trip.
                    s.trip_idle_s += s.trip_pending_s
                    s.trip_driving_s += step
                    s.trip_pending_s = 0.0
                    s.cand_t = s.cand_lat = s.cand_lon = None
                if (
                    not s.trip_confirmed
                    and s.cand_t is None
                    and s.odometer_m - s.trip_odo >= r.min_trip_distance_m
                ):
                    self.confirm_trip()
            elif cand_t is None:
                s.trip_driving_s += step
                self.stationary(t, lat, lon)
            else:
                s.trip_pending_s += step

    def relocated(self, t: float, lat: float, lon: float) -> bool:
        """Whether a fix rejected as a jump is where the vehicle really is now."""
        s = self.s
        r = self.r
        if (
            s.rej_t is not None
            and s.rej_lat is not None
            and s.rej_lon is not None
            and haversine_m(s.rej_lat, s.rej_lon, lat, lon)
            <= r.max_plausible_speed_mps * (t - s.rej_t)
        ):
            s.rej_n += 1
        else:
            s.rej_n = 1
        if s.rej_n < r.relocate_after:
            s.rej_t, s.rej_lat, s.rej_lon = t, lat, lon
            return False
        s.rej_n = 0
        s.rej_t = s.rej_lat = s.rej_lon = None
        return True

    def geofences(
        self, t: float, lat: float, lon: float, inside: list[tuple[Geofence, str]]
    ) -> None:
        s = self.s
        visits = s.inside
        now = set()
        for g, key in inside:
            now.add(key)
            visit = visits.get(key)
            if visit is None:
                visits[key] = (t, False)
                self.emit("geofence_enter", t, lat, lon, geofence=g)
                continue
            since, dwelled = visit
            dwell_s = g.dwell_s if g.dwell_s is not None else self.r.dwell_s
            if not dwelled and t - since >= dwell_s:
                visits[key] = (since, True)
                self.emit(
                    "geofence_dwell",
                    t,
                    lat,
                    lon,
                    duration_s=t - since,
                    limit=dwell_s,
                    geofence=g,
                    key_t=since,
                )
        if len(now) == len(visits):
            return
        for key in sorted(k for k in visits if k not in now):
            since, _ = visits.pop(key)
            left = self.gset.get(key)
            if left is not None:
                self.emit("geofence_exit", t, lat, lon, duration_s=t - since, geofence=left)

    def stationary(self, t: float, lat: float | None, lon: float | None) -> None:
        s = self.s
        s.cand_t, s.cand_lat, s.cand_lon = t, lat, lon
        s.cand_odo = s.odometer_m
        s.trip_pending_s = 0.0

    def start_trip(self, t: float, lat: float | None, lon: float | None, odo: float) -> None:
        s = self.s
        s.trip_t, s.trip_lat, s.trip_lon = t, lat, lon
        s.trip_odo = odo
        s.trip_max_speed = s.trip_driving_s = s.trip_idle_s = s.trip_pending_s = 0.0
        s.trip_confirmed = False
        s.cand_t = s.cand_lat = s.cand_lon = None

    def confirm_trip(self) -> None:
        s = self.s
        s.trip_confirmed = True
        if (
            s.stop_t is not None
            and s.stop_lat is not None
            and s.stop_lon is not None
            and s.trip_t is not None
            and s.trip_t > s.stop_t
        ):
            self.stops.append(
                Stop(
                    device_uid=s.device_uid,
                    start_time=_dt(s.stop_t),
                    end_time=_dt(s.trip_t),
                    lat=s.stop_lat,
                    lon=s.stop_lon,
                    duration_s=s.trip_t - s.stop_t,
                )
            )

    def close_trip(self) -> None:
        s = self.s
        cand_t = s.cand_t
        trip_t = s.trip_t
        if cand_t is None or trip_t is None:
            return
        if (
            s.trip_confirmed
            and s.trip_lat is not None
            and s.trip_lon is not None
            and s.cand_lat is not None
            and s.cand_lon is not None
        ):
            start = (trip_t, s.trip_lat, s.trip_lon)
            self.closed.append(_trip(s, start, (cand_t, s.cand_lat, s.cand_lon), s.cand_odo))
            s.stop_t, s.stop_lat, s.stop_lon = cand_t, s.cand_lat, s.cand_lon
        elif s.stop_t is None:
            s.stop_t, s.stop_lat, s.stop_lon = trip_t, s.trip_lat, s.trip_lon
        s.trip_t = s.trip_lat = s.trip_lon = None
        s.cand_t = s.cand_lat = s.cand_lon = None
        s.trip_confirmed = False
        s.trip_pending_s = 0.0
        if s.over_t is not None:
            self.end_overspeed()

    def end_overspeed(self) -> None:
        s = self.s
        start = s.over_t
        assert start is not None
        duration = s.over_last_t - start
        if duration >= self.r.overspeed_min_s:
            self.emit(
                "overspeed",
                start,
                s.over_lat,
                s.over_lon,
                value=s.over_max,
                duration_s=duration,
                limit=s.over_limit,
            )
        s.over_t = s.over_lat = s.over_lon = None

    def end_idle(self) -> None:
        s = self.s
        start = s.idle_t
        assert start is not None
        duration = s.idle_last_t - start
        if duration >= self.r.idle_min_s:
            self.emit("idle", start, s.idle_lat, s.idle_lon, duration_s=duration)
        s.idle_t = s.idle_lat = s.idle_lon = None

    def open_trip(self) -> Trip | None:
        s = self.s
        if s.trip_t is None or s.trip_lat is None or s.trip_lon is None:
            return None
        if s.fix_t is None or s.fix_lat is None or s.fix_lon is None:
            return None
        end_t = max(s.fix_t, s.trip_t)
        start = (s.trip_t, s.trip_lat, s.trip_lon)
        return _trip(s, start, (end_t, s.fix_lat, s.fix_lon), s.odometer_m)


def _trip(
    s: DeviceState,
    start: tuple[float, float, float],
    end: tuple[float, float, float],
    end_odo: float,
) -> Trip:
    """The trip in `s` from `start` to `end` ((time, lat, lon) each): a closed one, or the one
    still open."""
    (start_t, start_lat, start_lon), (end_t, end_lat, end_lon) = start, end
    duration = end_t - start_t
    distance = end_odo - s.trip_odo
    return Trip(
        device_uid=s.device_uid,
        start_time=_dt(start_t),
        end_time=_dt(end_t),
        start_lat=start_lat,
        start_lon=start_lon,
        end_lat=end_lat,
        end_lon=end_lon,
        distance_m=distance,
        duration_s=duration,
        driving_s=s.trip_driving_s,
        idle_s=s.trip_idle_s,
        max_speed_mps=s.trip_max_speed,
        avg_speed_mps=distance / duration if duration > 0 else 0.0,
        start_odometer_m=s.trip_odo,
        end_odometer_m=end_odo,
    )
