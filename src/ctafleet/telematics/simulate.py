"""A simulated fleet that drives through the real ingest protocols (`ctafleet simulate`).

The vehicle model is deterministic for a seed and a pure step function: `Vehicle.step(dt_s)`
moves simulated time on by `dt_s` and returns the fix at the new time, so tests run hours of
driving without sleeping. Each vehicle loops a route of waypoints around a centre on a
street grid (axis-aligned legs, one cruising speed per leg), accelerating and braking within
what a vehicle does, slowing for corners, stopping at stops (1-15 min; ignition off at most
long stops, left idling at the others and at short ones), speeding now and then (above
30 m/s for 20-60 s), with a tracker battery that charges while the ignition is on and drains
while it is off, and GPS noise matching the reported accuracy.

The senders speak the protocols a real device speaks, to the real endpoints:

- `osmand`: one request per fix to `<url>/ingest/osmand`, with the query parameters of
  Traccar Client (`id`, `timestamp` in epoch seconds, `lat`, `lon`, `speed` in knots,
  `bearing`, `altitude`, `accuracy`, `batt`, `charge`, plus `ignition`). The credential goes
  as `Authorization: Bearer` (or a `token` parameter, which access logs would record).
- `json`: `POST <url>/api/v1/telemetry` with the device credential as Bearer, SI units, up to
  `batch` fixes of one device per request.
- `mqtt`, for the MQTT bridge (`ctafleet mqtt`):

      topic    ctafleet/v1/telemetry/<device unique id>
      QoS      1 (at least once: a message may arrive twice; the writer stores a fix once)
      payload  the JSON batch body of POST /api/v1/telemetry (SI units) with the device's
               credential at the top level:
               {"device": "<unique id>", "credential": "ctd_...", "points": [{...}, ...]}

  The bridge checks the credential against the topic's device, removes `credential` and
  hands the rest to the batch parser. One broker connection carries every device; a fix
  counts as accepted once the broker acknowledges it (what the bridge does next is its own).

Delivery is at least once: fixes leave a device's outbox only when the server (or broker)
has answered for them. A 503 or 429 pauses every sender for its Retry-After and the same
request is sent again; a lost connection is retried with backoff once the server has been
reached at least once (before that it is an error: wrong URL or server down).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import json
import math
import random
import secrets
import threading
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol
from urllib.parse import urlsplit

import httpx
import orjson

from ctafleet.kernel.clock import Clock, SystemClock
from ctafleet.kernel.units import MPS_PER_KNOT
from ctafleet.telematics.mqtt_url import Broker, parse_broker_url

if TYPE_CHECKING:
    from paho.mqtt.client import Client as MqttClient

ProtocolName = Literal["osmand", "json", "mqtt"]
PROTOCOLS: tuple[ProtocolName, ...] = ("osmand", "json", "mqtt")

DEFAULT_URL = "http://127.0.0.1:8000"
# In the data directory: the demo fleet's devices and credentials, as `ctafleet demo` seeds them.
DEVICES_FILE = "demo-devices.json"
DEFAULT_MQTT_URL = "mqtt://127.0.0.1:1883"
DEFAULT_CENTRE = (41.88, -87.63)  # Chicago's Loop, where the demo fleet has its yards
DEFAULT_RADIUS_M = 8000.0
OSMAND_PATH = "/ingest/osmand"
BATCH_PATH = "/api/v1/telemetry"
TOPIC_PREFIX = "ctafleet/v1/telemetry/"

_M_PER_DEG = math.pi * 6_371_008.8 / 180.0
# Integration step: fine enough that braking to a stop never overshoots by more than a metre.
_SUBSTEP_S = 0.5
ACCEL_MPS2 = 1.5
SPEEDING_ACCEL_MPS2 = 2.0
BRAKE_MPS2 = 2.5  # planned braking toward a stop or corner
MAX_DECEL_MPS2 = 4.0  # the hardest the model ever brakes
CORNER_MPS = 6.0
CREEP_MPS = 1.5  # the last metres to a stop: never stall short of it
CRUISE_MPS = (8.0, 25.0)
SPEEDING_THRESHOLD_MPS = 30.0
SPEEDING_MPS = (31.5, 36.0)
SPEEDING_SPAN_S = (20.0, 60.0)  # time spent above the threshold per episode
SPEEDING_EVERY_S = 600.0  # mean driving time between episodes
SPEEDING_ROOM_M = 1500.0  # an episode starts only with this much road ahead
MAX_SPEED_MPS = SPEEDING_MPS[1]
DWELL_S = (60.0, 900.0)
LONG_STOP_S = 300.0
IDLE_AT_LONG_STOP = 0.25  # share of long stops with the engine left running
WARM_UP_S = (20.0, 90.0)  # ignition on before pulling away
ACCURACY_M = (3.0, 10.0)
CHARGE_PCT_PER_S = 30.0 / 3600.0
DRAIN_PCT_PER_S = 5.0 / 3600.0
BASE_ALTITUDE_M = 180.0

# Retry-After beyond this is a misconfigured server: wait at most this long between tries.
MAX_RETRY_AFTER_S = 300.0
DEFAULT_RETRY_AFTER_S = 5.0
MAX_BACKOFF_S = 30.0
# Fixes of a batching sender wait at most this long (wall time) for their batch to fill.
MAX_BATCH_WAIT_S = 10.0
MQTT_ACK_TIMEOUT_S = 30.0


class SimulationError(Exception):
    """A problem the user can fix (bad file, wrong URL, refused credential): the CLI prints
    the message, never a traceback."""


class CredentialRefused(SimulationError):
    def __init__(self, unique_id: str) -> None:
        super().__init__(
            f"credential refused for device {unique_id} (is the devices file from this "
            "server's demo seed, and the device still active?)"
        )
        self.unique_id = unique_id


class Unreachable(SimulationError):
    """The server or broker could not be reached (retried once it has been reached)."""


# --- the vehicle model -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Fix:
    """What a tracker reports, in SI units and UTC."""

    device: str  # the device's unique id
    time: datetime
    lat: float
    lon: float
    speed_mps: float
    course_deg: float
    altitude_m: float
    accuracy_m: float
    battery_pct: float
    charging: bool
    ignition: bool
    odometer_m: float


@dataclass(frozen=True, slots=True)
class Waypoint:
    x: float  # metres east of the centre
    y: float  # metres north of the centre
    stop: bool


@dataclass(frozen=True, slots=True)
class Leg:
    """A road segment toward `end`, driven at `cruise_mps`, left at `end_mps` (0 at a stop;
    at a corner slow enough to turn, and to stop within the next leg)."""

    end: Waypoint
    cruise_mps: float
    end_mps: float = 0.0


def make_route(*, rng: random.Random, radius_m: float) -> tuple[Leg, ...]:
    """A loop around the centre: 5-9 waypoints in angular order, joined through a corner so
    every leg runs along the grid. Every point lies within `radius_m` on each axis."""
    n = rng.randint(5, 9)
    offset = rng.uniform(0.0, 2 * math.pi)
    points = []
    for i in range(n):
        angle = offset + 2 * math.pi * (i + rng.uniform(-0.3, 0.3)) / n
        r = radius_m * rng.uniform(0.3, 1.0)
        points.append((r * math.cos(angle), r * math.sin(angle)))
    legs = []
    for i in range(n):
        (x1, y1), (x2, y2) = points[i], points[(i + 1) % n]
        # Of the two corners, the one nearer the centre keeps the route inside the area.
        corner = min((x2, y1), (x1, y2), key=lambda p: math.hypot(*p))
        legs.append(Leg(Waypoint(*corner, stop=False), rng.uniform(*CRUISE_MPS)))
        legs.append(Leg(Waypoint(x2, y2, stop=rng.random() < 0.7), rng.uniform(*CRUISE_MPS)))
    ends = []
    for i, leg in enumerate(legs):
        if leg.end.stop:
            ends.append(0.0)
            continue
        after = legs[(i + 1) % len(legs)]
        room = math.hypot(after.end.x - leg.end.x, after.end.y - leg.end.y)
        ends.append(
            min(CORNER_MPS, leg.cruise_mps, after.cruise_mps, math.sqrt(2 * BRAKE_MPS2 * room))
        )
    return tuple(Leg(leg.end, leg.cruise_mps, end) for leg, end in zip(legs, ends, strict=True))


class _Mode(Enum):
    DRIVING = "driving"
    STOPPED = "stopped"


class Vehicle:
    """One simulated vehicle with its tracker. Deterministic for a seed; `step` is its only
    way forward in time."""

    def __init__(
        self,
        *,
        unique_id: str,
        seed: int | str,
        start: datetime,
        centre: tuple[float, float] = DEFAULT_CENTRE,
        radius_m: float = DEFAULT_RADIUS_M,
    ) -> None:
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware")
        self.unique_id = unique_id
        self._rng = rng = random.Random(seed)  # noqa: S311 - a simulation, not security
        self._lat0, self._lon0 = centre
        self._m_per_deg_lon = _M_PER_DEG * math.cos(math.radians(self._lat0))
        self._start = start.astimezone(UTC)
        self._elapsed_ms = 0
        self.route = make_route(rng=rng, radius_m=radius_m)
        self._leg = rng.randrange(len(self.route))
        before = self.route[self._leg - 1].end
        self.x, self.y = before.x, before.y
        self.speed_mps = 0.0
        self.course_deg = rng.uniform(0.0, 360.0)
        self.ignition = True
        self.battery_pct = rng.uniform(35.0, 95.0)
        self.odometer_m = rng.uniform(5e6, 2.5e8)
        self._speeding_s = 0.0
        self._speeding_target = 0.0
        self._dwell_s = 0.0
        if rng.random() < 0.6:
            # Under way, somewhere along the leg, at a speed it could be doing there.
            self._mode = _Mode.DRIVING
            leg = self.route[self._leg]
            share = rng.random()
            self.x += (leg.end.x - self.x) * share
            self.y += (leg.end.y - self.y) * share
            self.speed_mps = min(leg.cruise_mps, self._allowed(leg))
            self.course_deg = _bearing(leg.end.x - before.x, leg.end.y - before.y)
        else:
            self._mode = _Mode.STOPPED
            self._dwell_s = rng.uniform(0.0, 600.0)
            self.ignition = rng.random() < 0.5

    @property
    def time(self) -> datetime:
        return self._start + timedelta(milliseconds=self._elapsed_ms)

    def step(self, dt_s: float) -> Fix:
        """Drive on for `dt_s` seconds of simulated time; the fix at the new time."""
        if dt_s < 0 or not math.isfinite(dt_s):
            raise ValueError("dt_s must be a finite number of seconds, not negative")
        # Whole milliseconds: fix times stay exact however many steps add up.
        step_ms = round(dt_s * 1000)
        remaining = step_ms / 1000
        while remaining > 1e-9:
            h = min(_SUBSTEP_S, remaining)
            self._advance(h)
            remaining -= h
        self._elapsed_ms += step_ms
        return self._fix()

    def _allowed(self, leg: Leg, ahead_m: float = 0.0) -> float:
        """The fastest speed from which planned braking still meets the leg's end speed,
        `ahead_m` further along."""
        dist = math.hypot(leg.end.x - self.x, leg.end.y - self.y) - ahead_m
        return math.sqrt(leg.end_mps**2 + 2 * BRAKE_MPS2 * max(dist, 0.0))

    def _advance(self, h: float) -> None:
        if self.ignition:
            self.battery_pct = min(100.0, self.battery_pct + CHARGE_PCT_PER_S * h)
        else:
            self.battery_pct = max(1.0, self.battery_pct - DRAIN_PCT_PER_S * h)
        if self._mode is _Mode.STOPPED:
            self._dwell_s -= h
            if self._dwell_s <= 0:
                if self.ignition:
                    self._mode = _Mode.DRIVING
                else:
                    self.ignition = True
                    self._dwell_s = self._rng.uniform(*WARM_UP_S)
            return
        leg = self.route[self._leg]
        dist = math.hypot(leg.end.x - self.x, leg.end.y - self.y)
        if (
            self._speeding_s <= 0
            and dist > SPEEDING_ROOM_M
            and self._rng.random() < h / SPEEDING_EVERY_S
        ):
            self._speeding_s = self._rng.uniform(*SPEEDING_SPAN_S)
            self._speeding_target = self._rng.uniform(*SPEEDING_MPS)
        speeding = self._speeding_s > 0
        target = self._speeding_target if speeding else leg.cruise_mps
        # Looking one substep ahead: braking starts in time rather than a step late.
        desired = min(target, self._allowed(leg, self.speed_mps * h))
        if dist > 1.0:
            desired = max(desired, CREEP_MPS)
        accel = SPEEDING_ACCEL_MPS2 if speeding else ACCEL_MPS2
        v0 = self.speed_mps
        v1 = max(0.0, min(max(desired, v0 - MAX_DECEL_MPS2 * h), v0 + accel * h))
        if speeding and v1 > SPEEDING_THRESHOLD_MPS:
            self._speeding_s -= h
        self.speed_mps = v1
        self._travel((v0 + v1) / 2 * h)

    def _travel(self, travel: float) -> None:
        self.odometer_m += travel
        while travel > 0:
            leg = self.route[self._leg]
            dx, dy = leg.end.x - self.x, leg.end.y - self.y
            dist = math.hypot(dx, dy)
            if dist > 0:
                self.course_deg = _bearing(dx, dy)
            if travel < dist:
                self.x += dx / dist * travel
                self.y += dy / dist * travel
                return
            self.x, self.y = leg.end.x, leg.end.y
            travel -= dist
            self._leg = (self._leg + 1) % len(self.route)
            if leg.end.stop:
                self.odometer_m -= travel  # the leftover was never driven
                self._arrive()
                return

    def _arrive(self) -> None:
        self.speed_mps = 0.0
        self._speeding_s = 0.0
        self._mode = _Mode.STOPPED
        self._dwell_s = self._rng.uniform(*DWELL_S)
        if self._dwell_s >= LONG_STOP_S and self._rng.random() >= IDLE_AT_LONG_STOP:
            self.ignition = False

    def _fix(self) -> Fix:
        rng = self._rng
        accuracy = rng.uniform(*ACCURACY_M)
        # About two thirds of fixes within the accuracy radius, as receivers define it.
        nx, ny = rng.gauss(0.0, accuracy / 2), rng.gauss(0.0, accuracy / 2)
        moving = self.speed_mps > 0
        speed = max(0.0, self.speed_mps + rng.gauss(0.0, 0.1)) if moving else 0.0
        altitude = (
            BASE_ALTITUDE_M
            + 8.0 * math.sin(self.x / 1500.0)
            + 5.0 * math.cos(self.y / 2100.0)
            + rng.gauss(0.0, 1.0)
        )
        return Fix(
            device=self.unique_id,
            time=self.time,
            lat=self._lat0 + (self.y + ny) / _M_PER_DEG,
            lon=self._lon0 + (self.x + nx) / self._m_per_deg_lon,
            speed_mps=speed,
            course_deg=round(self.course_deg, 1) % 360.0,
            altitude_m=altitude,
            accuracy_m=accuracy,
            battery_pct=self.battery_pct,
            charging=self.ignition,
            ignition=self.ignition,
            odometer_m=self.odometer_m,
        )


def _bearing(dx: float, dy: float) -> float:
    """Degrees clockwise from north of a move `dx` metres east and `dy` north."""
    return math.degrees(math.atan2(dx, dy)) % 360.0


def make_fleet(
    *,
    unique_ids: Sequence[str],
    seed: int,
    start: datetime,
    centre: tuple[float, float] = DEFAULT_CENTRE,
    radius_m: float = DEFAULT_RADIUS_M,
) -> list[Vehicle]:
    """One vehicle per device; vehicle i drives the same way for a seed whatever the ids."""
    return [
        Vehicle(unique_id=uid, seed=f"{seed}/{i}", start=start, centre=centre, radius_m=radius_m)
        for i, uid in enumerate(unique_ids)
    ]


# --- devices ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeviceCredential:
    unique_id: str
    credential: str

    def __repr__(self) -> str:  # never the secret, wherever this ends up printed
        return f"DeviceCredential(unique_id={self.unique_id!r})"


def load_devices(*, path: Path) -> list[DeviceCredential]:
    """The devices file `ctafleet demo` writes: a JSON list of
    `{"unique_id": ..., "credential": "ctd_...", ...}`."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise SimulationError(
            f"no devices file at {path}: run `ctafleet demo` first (it writes the demo "
            "devices there) or pass --devices FILE"
        ) from None
    except OSError as exc:
        raise SimulationError(f"cannot read the devices file {path}: {exc.strerror}") from None
    try:
        entries = json.loads(raw)
    except ValueError:
        raise SimulationError(f"the devices file {path} is not JSON") from None
    if not isinstance(entries, list):
        raise SimulationError(f"the devices file {path} must hold a JSON list of devices")
    devices = []
    for index, entry in enumerate(entries):
        uid = entry.get("unique_id") if isinstance(entry, dict) else None
        credential = entry.get("credential") if isinstance(entry, dict) else None
        if not isinstance(uid, str) or not uid or not isinstance(credential, str):
            raise SimulationError(
                f"the devices file {path}: entry {index} needs a unique_id and a credential"
            )
        devices.append(DeviceCredential(uid, credential))
    return devices


# --- senders ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Delivery:
    """The server's answer for the fixes of one request. With `retry_after_s` set, nothing
    was taken: the same fixes are to be sent again after that many seconds."""

    accepted: int = 0
    rejected: int = 0
    retry_after_s: float | None = None
    reasons: tuple[str, ...] = ()  # why fixes were rejected, one per rejected fix


class Sender(Protocol):
    name: str
    max_batch: int  # most fixes of one device per request

    async def deliver(self, *, device: DeviceCredential, fixes: Sequence[Fix]) -> Delivery: ...

    async def aclose(self) -> None: ...


def _retry_after(value: str | None) -> float:
    """Retry-After as seconds: delta-seconds or an HTTP date; a default when absent."""
    if not value:
        return DEFAULT_RETRY_AFTER_S
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return DEFAULT_RETRY_AFTER_S
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    if not math.isfinite(seconds):
        return DEFAULT_RETRY_AFTER_S
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


def _problem_slug(response: httpx.Response) -> str:
    """The last part of a problem's `type` (`/problems/osmand-future-fix` -> its slug)."""
    try:
        kind = response.json().get("type", "")
    except (ValueError, AttributeError):
        kind = ""
    slug = str(kind).rstrip("/").rpartition("/")[2]
    return slug or f"http-{response.status_code}"


def _epoch(moment: datetime) -> str:
    """Epoch seconds as Traccar Client writes them: whole seconds, milliseconds only when a
    fix falls between two."""
    millis = round(moment.timestamp() * 1000)
    seconds, rest = divmod(millis, 1000)
    return str(seconds) if rest == 0 else f"{seconds}.{rest:03d}"


def osmand_params(fix: Fix) -> dict[str, str]:
    """A fix as the query parameters of Traccar Client (speed in knots)."""
    return {
        "id": fix.device,
        "timestamp": _epoch(fix.time),
        "lat": f"{fix.lat:.7f}",
        "lon": f"{fix.lon:.7f}",
        "speed": f"{fix.speed_mps / MPS_PER_KNOT:.3f}",
        "bearing": f"{fix.course_deg:.1f}",
        "altitude": f"{fix.altitude_m:.1f}",
        "accuracy": f"{fix.accuracy_m:.1f}",
        "batt": f"{fix.battery_pct:.1f}",
        "charge": "true" if fix.charging else "false",
        "ignition": "true" if fix.ignition else "false",
    }


def batch_point(fix: Fix) -> dict[str, Any]:
    """A fix as one point of the JSON batch format (SI units)."""
    millis = round(fix.time.timestamp() * 1000)
    moment = datetime.fromtimestamp(millis / 1000, UTC)
    return {
        "time": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "lat": round(fix.lat, 7),
        "lon": round(fix.lon, 7),
        "speed": round(fix.speed_mps, 3),
        "course": fix.course_deg,
        "altitude": round(fix.altitude_m, 1),
        "accuracy": round(fix.accuracy_m, 1),
        "battery": round(fix.battery_pct, 1),
        "charging": fix.charging,
        "ignition": fix.ignition,
        "odometer": round(fix.odometer_m, 1),
    }


def batch_body(*, device: DeviceCredential, fixes: Sequence[Fix]) -> dict[str, Any]:
    return {"device": device.unique_id, "points": [batch_point(f) for f in fixes]}


def mqtt_topic(unique_id: str) -> str:
    return f"{TOPIC_PREFIX}{unique_id}"


def mqtt_payload(*, device: DeviceCredential, fixes: Sequence[Fix]) -> bytes:
    return orjson.dumps({**batch_body(device=device, fixes=fixes), "credential": device.credential})


class _HttpSender:
    name = "http"
    max_batch = 1

    def __init__(self, *, url: str, client: httpx.AsyncClient | None, concurrency: int) -> None:
        self._base = url.rstrip("/")
        self._owned = client is None
        self._client = client or httpx.AsyncClient(
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
            timeout=httpx.Timeout(10.0),
        )

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        url = f"{self._base}{path}"
        try:
            return await self._client.request(method, url, **kwargs)
        except httpx.TransportError as exc:
            # The exception's text, never the request (whose URL may carry a credential).
            raise Unreachable(
                f"cannot reach the server at {self._base} ({type(exc).__name__}: {exc}); "
                "is it running, and is --url right?"
            ) from None

    def _common(self, response: httpx.Response, device: DeviceCredential, n: int) -> Delivery:
        """The answers both HTTP protocols share; raises for those that end the run."""
        status = response.status_code
        if status == 401 or status == 403:
            raise CredentialRefused(device.unique_id)
        if status == 404:
            raise SimulationError(
                f"{response.request.url.copy_with(query=None)} answered 404: is --url a "
                "CTAFleet server?"
            )
        # Busy or restarting: the same request again later. A 500 is a bug that resending the
        # same fixes would only repeat, blocking every device behind them: rejected instead.
        if status in (429, 502, 503, 504):
            return Delivery(retry_after_s=_retry_after(response.headers.get("retry-after")))
        return Delivery(rejected=n, reasons=(_problem_slug(response),) * n)

    async def aclose(self) -> None:
        if self._owned:
            await self._client.aclose()


class OsmAndSender(_HttpSender):
    """One request per fix to `/ingest/osmand`, as Traccar Client sends it."""

    name = "osmand"
    max_batch = 1

    def __init__(
        self,
        *,
        url: str,
        client: httpx.AsyncClient | None = None,
        concurrency: int = 8,
        auth: Literal["bearer", "token"] = "bearer",
        method: Literal["POST", "GET"] = "POST",
    ) -> None:
        super().__init__(url=url, client=client, concurrency=concurrency)
        self._auth = auth
        self._method = method

    async def deliver(self, *, device: DeviceCredential, fixes: Sequence[Fix]) -> Delivery:
        if len(fixes) != 1:
            raise ValueError("OsmAnd carries one fix per request")
        params = osmand_params(fixes[0])
        headers = {}
        if self._auth == "bearer":
            headers["Authorization"] = f"Bearer {device.credential}"
        else:
            params["token"] = device.credential
        response = await self._request(self._method, OSMAND_PATH, params=params, headers=headers)
        if response.status_code == 200:
            return Delivery(accepted=1)
        return self._common(response, device, 1)


class JsonSender(_HttpSender):
    """Batches of one device's fixes to `POST /api/v1/telemetry`, SI units."""

    name = "json"

    def __init__(
        self,
        *,
        url: str,
        client: httpx.AsyncClient | None = None,
        concurrency: int = 8,
        max_batch: int = 10,
    ) -> None:
        super().__init__(url=url, client=client, concurrency=concurrency)
        self.max_batch = max_batch

    async def deliver(self, *, device: DeviceCredential, fixes: Sequence[Fix]) -> Delivery:
        response = await self._request(
            "POST",
            BATCH_PATH,
            content=orjson.dumps(batch_body(device=device, fixes=fixes)),
            headers={
                "Authorization": f"Bearer {device.credential}",
                "Content-Type": "application/json",
            },
        )
        if response.status_code in (200, 202):
            answer = response.json()
            refused = answer.get("rejected") or []
            return Delivery(
                accepted=int(answer.get("accepted", 0)),
                rejected=len(refused),
                reasons=tuple(str(r.get("reason", "?")) for r in refused),
            )
        return self._common(response, device, len(fixes))


def parse_mqtt_url(url: str) -> Broker:
    try:
        return parse_broker_url(url)
    except ValueError as exc:
        raise SimulationError(f"--mqtt-url {url!r}: {exc}") from None


class MqttSender:
    """Publishes each device's batches at QoS 1 over one broker connection (paho-mqtt, whose
    network thread hands acknowledgements back to the event loop)."""

    name = "mqtt"

    def __init__(self, *, url: str, max_batch: int = 10, ca_file: Path | None = None) -> None:
        self.max_batch = max_batch
        self.ca_file = ca_file
        self._target = parse_mqtt_url(url)
        self._where = f"{self._target.host}:{self._target.port}"
        self._client: MqttClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self._waiting: dict[int, asyncio.Future[bool]] = {}
        self._early: set[int] = set()  # acknowledged before publish() returned its mid
        self._abandoned: set[int] = set()  # timed out: a late acknowledgement is dropped

    async def connect(self, *, timeout_s: float = 10.0) -> None:
        try:
            from paho.mqtt.client import Client
            from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
        except ImportError:  # pragma: no cover - a dependency of the package
            raise SimulationError("the mqtt protocol needs paho-mqtt installed") from None
        self._loop = loop = asyncio.get_running_loop()
        connected: asyncio.Future[str | None] = loop.create_future()

        def settle(outcome: str | None) -> None:
            if not connected.done():
                connected.set_result(outcome)

        def on_connect(_c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
            failed = getattr(reason, "is_failure", False)
            loop.call_soon_threadsafe(settle, str(reason) if failed else None)

        client = Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"ctafleet-simulate-{secrets.token_hex(4)}",
            protocol=MQTTProtocolVersion.MQTTv311,
        )
        if self._target.username is not None:
            client.username_pw_set(self._target.username, self._target.password)
        if self._target.tls:
            client.tls_set(ca_certs=str(self.ca_file) if self.ca_file is not None else None)
        client.on_connect = on_connect
        client.on_publish = self._on_publish
        client.reconnect_delay_set(min_delay=1, max_delay=int(MAX_BACKOFF_S))
        try:
            await asyncio.to_thread(client.connect, self._target.host, self._target.port, 30)
        except (OSError, ValueError) as exc:
            raise Unreachable(
                f"cannot reach the MQTT broker at {self._where} ({exc}); is it running, and "
                "is --mqtt-url right?"
            ) from None
        client.loop_start()
        self._client = client
        try:
            async with asyncio.timeout(timeout_s):
                refused = await connected
        except TimeoutError:
            await self.aclose()
            raise Unreachable(f"the MQTT broker at {self._where} did not answer") from None
        if refused is not None:
            await self.aclose()
            raise SimulationError(f"the MQTT broker at {self._where} refused us: {refused}")

    def _on_publish(self, _c: Any, _u: Any, mid: int, _reason: Any, _p: Any) -> None:
        # paho's network thread: hand over to the loop.
        with self._lock:
            future = self._waiting.pop(mid, None)
            if mid in self._abandoned:
                self._abandoned.discard(mid)
            elif future is None:
                self._early.add(mid)
        if future is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(_resolve, future)

    async def deliver(self, *, device: DeviceCredential, fixes: Sequence[Fix]) -> Delivery:
        if self._client is None or self._loop is None:
            raise SimulationError("the MQTT sender is not connected")
        info = self._client.publish(
            mqtt_topic(device.unique_id), mqtt_payload(device=device, fixes=fixes), qos=1
        )
        from paho.mqtt.enums import MQTTErrorCode

        # Queued while the connection is down is as good as sent: paho sends it on reconnect.
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            return Delivery(retry_after_s=1.0)
        future: asyncio.Future[bool] = self._loop.create_future()
        with self._lock:
            if info.mid in self._early:
                self._early.discard(info.mid)
                future.set_result(True)
            else:
                self._waiting[info.mid] = future
        try:
            async with asyncio.timeout(MQTT_ACK_TIMEOUT_S):
                await future
        except TimeoutError:
            with self._lock:
                self._waiting.pop(info.mid, None)
                self._abandoned.add(info.mid)
            # Sent again: a duplicate is stored once, a lost message never.
            return Delivery(retry_after_s=1.0)
        return Delivery(accepted=len(fixes))

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.disconnect()
            await asyncio.to_thread(client.loop_stop)


def _resolve(future: asyncio.Future[bool]) -> None:
    if not future.done():
        future.set_result(True)


# --- the run ---------------------------------------------------------------------------------


@dataclass
class Stats:
    """Fix counts of a run: `sent` once per fix, `retried` once per resend."""

    sent: int = 0
    accepted: int = 0
    rejected: int = 0
    retried: int = 0
    unsent: int = 0  # still in an outbox when the run ended
    requests: int = 0
    reasons: Counter[str] = field(default_factory=Counter)

    @property
    def pending(self) -> int:
        return self.sent - self.accepted - self.rejected


@dataclass(frozen=True, slots=True)
class Options:
    """What `ctafleet simulate` takes; the same defaults."""

    url: str = DEFAULT_URL
    protocol: ProtocolName = "osmand"
    vehicles: int | None = None  # None: one per device in the file
    rate: float = 10.0  # fixes per second across the fleet
    duration_s: float = 0.0  # wall seconds; 0 until stopped
    seed: int = 1
    speedup: float = 1.0
    centre: tuple[float, float] = DEFAULT_CENTRE
    radius_m: float = DEFAULT_RADIUS_M
    mqtt_url: str = DEFAULT_MQTT_URL
    mqtt_ca_file: Path | None = None  # mqtts://: the broker's CA (None: the system's)
    batch: int = 10  # json and mqtt: most fixes per request per device
    concurrency: int = 8
    report_every_s: float = 10.0  # 0: no progress lines, the summary only
    drain_timeout_s: float = 10.0
    osmand_auth: Literal["bearer", "token"] = "bearer"


Sleep = Callable[[float], Awaitable[None]]
Echo = Callable[[str], None]


@dataclass
class _Outbox:
    device: DeviceCredential
    fixes: deque[Fix] = field(default_factory=deque)
    since: float = 0.0  # loop time the oldest fix waiting arrived


class Runner:
    """Drives `vehicles` in wall time (simulated time `speedup` times faster), each reporting
    every `len(vehicles) / rate` seconds, and delivers their fixes through `sender` with
    `concurrency` workers, each owning a share of the devices (so a device's fixes go out in
    order)."""

    def __init__(
        self,
        *,
        vehicles: Sequence[Vehicle],
        devices: Sequence[DeviceCredential],
        sender: Sender,
        options: Options,
        stop: asyncio.Event | None = None,
        sleep: Sleep = asyncio.sleep,
        echo: Echo = print,
    ) -> None:
        if len(vehicles) != len(devices) or not vehicles:
            raise ValueError("one device per vehicle, at least one")
        self.vehicles = list(vehicles)
        self.sender = sender
        self.options = options
        self.stop = stop or asyncio.Event()
        self.stats = Stats()
        self._sleep = sleep
        self._echo = echo
        self._batch = max(1, min(options.batch, sender.max_batch))
        self._outboxes = [_Outbox(d) for d in devices]
        workers = max(1, min(options.concurrency, len(devices)))
        self._wake = [asyncio.Event() for _ in range(workers)]
        self._draining = False
        self._reached = False  # the server answered at least once
        self._resume_at = 0.0  # loop time before which no request is sent (Retry-After)
        self._done = asyncio.Event()
        self._t0 = 0.0

    async def run(self) -> Stats:
        loop = asyncio.get_running_loop()
        self._t0 = loop.time()
        try:
            async with asyncio.TaskGroup() as group:
                workers = [group.create_task(self._worker(w)) for w in range(len(self._wake))]
                reporter = group.create_task(self._report())
                await self._schedule()
                self._draining = True
                for wake in self._wake:
                    wake.set()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.options.drain_timeout_s):
                        await asyncio.gather(*workers)
                for task in workers:
                    task.cancel()
                self._done.set()
                await reporter
        except BaseExceptionGroup as group:
            failure = _first(group)
            if failure is None:
                raise
            raise failure from None
        finally:
            self.stats.unsent = sum(len(o.fixes) for o in self._outboxes)
            self._echo(self.summary())
        return self.stats

    async def _schedule(self) -> None:
        """Step each vehicle when its report is due and put the fix in its outbox."""
        loop = asyncio.get_running_loop()
        n = len(self.vehicles)
        interval = n / self.options.rate
        speedup = self.options.speedup
        duration = self.options.duration_s
        # Vehicle i reports at t0 + i/rate + k*interval: evenly spread, never in a burst.
        due = [(self._t0 + i / self.options.rate, 0, i) for i in range(n)]
        heapq.heapify(due)
        while not self.stop.is_set():
            now = loop.time()
            if duration and now - self._t0 >= duration:
                return
            while due[0][0] <= now:
                _, k, i = heapq.heappop(due)
                # From the schedule, not the wall: the same seed gives the same fixes. Every
                # vehicle's k-th fix is taken at start + k intervals (whole seconds for whole
                # intervals, as trackers report) and sent a little later, spread over it.
                dt = 0.0 if k == 0 else interval * speedup
                fix = self.vehicles[i].step(dt)
                outbox = self._outboxes[i]
                if not outbox.fixes:
                    outbox.since = now
                outbox.fixes.append(fix)
                self._wake[i % len(self._wake)].set()
                heapq.heappush(
                    due, (self._t0 + i / self.options.rate + (k + 1) * interval, k + 1, i)
                )
            wait = due[0][0] - loop.time()
            if duration:
                wait = min(wait, self._t0 + duration - loop.time())
            # Wake at least once a second: batches waiting for their time go out.
            wait = min(wait, 1.0)
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self.stop.wait()
            if self._batch > 1:
                for wake in self._wake:
                    wake.set()

    def _ready(self, outbox: _Outbox, now: float) -> bool:
        if not outbox.fixes:
            return False
        return (
            self._draining
            or len(outbox.fixes) >= self._batch
            or now - outbox.since >= MAX_BATCH_WAIT_S
        )

    async def _worker(self, w: int) -> None:
        loop = asyncio.get_running_loop()
        mine = self._outboxes[w :: len(self._wake)]
        wake = self._wake[w]
        while True:
            await wake.wait()
            wake.clear()
            progressed = True
            while progressed:
                progressed = False
                for outbox in mine:
                    if self._ready(outbox, loop.time()):
                        await self._deliver(outbox)
                        progressed = True
            if self._draining and not any(o.fixes for o in mine):
                return

    async def _deliver(self, outbox: _Outbox) -> None:
        """Send the outbox's first fixes until the server has answered for them."""
        loop = asyncio.get_running_loop()
        fixes = [outbox.fixes[i] for i in range(min(self._batch, len(outbox.fixes)))]
        self.stats.sent += len(fixes)
        failures = 0
        while True:
            # A pause another worker was told to take; a retry here has already slept its own.
            pause = self._resume_at - loop.time()
            if pause > 0 and failures == 0:
                await self._sleep(pause)
            self.stats.requests += 1
            try:
                answer = await self.sender.deliver(device=outbox.device, fixes=fixes)
            except Unreachable:
                if not self._reached:
                    raise
                failures += 1
                self.stats.retried += len(fixes)
                await self._sleep(min(MAX_BACKOFF_S, 2.0 ** (failures - 1)))
                continue
            self._reached = True
            if answer.retry_after_s is not None:
                failures += 1
                self.stats.retried += len(fixes)
                self._resume_at = max(self._resume_at, loop.time() + answer.retry_after_s)
                await self._sleep(answer.retry_after_s)
                continue
            break
        self._resume_at = 0.0
        # The server has answered for every fix of the request, taken or refused.
        for _ in fixes:
            outbox.fixes.popleft()
        if outbox.fixes:
            outbox.since = loop.time()
        self.stats.accepted += answer.accepted
        self.stats.rejected += answer.rejected
        self.stats.reasons.update(answer.reasons)

    async def _report(self) -> None:
        every = self.options.report_every_s
        if every <= 0:
            return
        loop = asyncio.get_running_loop()
        last_t, last_sent = self._t0, 0
        while not self._done.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(every):
                    await self._done.wait()
            if self._done.is_set():
                return
            now = loop.time()
            s = self.stats
            rate = (s.sent - last_sent) / max(now - last_t, 1e-9)
            self._echo(
                f"{now - self._t0:7.0f}s  sent {s.sent}  accepted {s.accepted}  rejected "
                f"{s.rejected}  retried {s.retried}  pending {s.pending}  ({rate:.1f} fixes/s)"
            )
            last_t, last_sent = now, s.sent

    def summary(self) -> str:
        s = self.stats
        elapsed = asyncio.get_running_loop().time() - self._t0
        line = (
            f"{self.sender.name}: {len(self.vehicles)} vehicles, {elapsed:.0f}s: sent {s.sent}, "
            f"accepted {s.accepted}, rejected {s.rejected}, retried {s.retried}, "
            f"unsent {s.unsent}"
        )
        if s.reasons:
            line += " (rejected: " + ", ".join(f"{r} {n}" for r, n in s.reasons.most_common())
            line += ")"
        return line


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The error a run ends with: a SimulationError in preference to the rest."""
    leaves: list[BaseException] = []

    def walk(g: BaseExceptionGroup[BaseException]) -> None:
        for exc in g.exceptions:
            if isinstance(exc, BaseExceptionGroup):
                walk(exc)
            else:
                leaves.append(exc)

    walk(group)
    for exc in leaves:
        if isinstance(exc, SimulationError):
            return exc
    return leaves[0] if leaves else None


async def open_sender(*, options: Options, client: httpx.AsyncClient | None = None) -> Sender:
    """The sender for `options.protocol`; `client` (tests: an in-process app) for HTTP."""
    if options.protocol == "osmand":
        return OsmAndSender(
            url=options.url,
            client=client,
            concurrency=options.concurrency,
            auth=options.osmand_auth,
        )
    if options.protocol == "json":
        return JsonSender(
            url=options.url,
            client=client,
            concurrency=options.concurrency,
            max_batch=options.batch,
        )
    if options.protocol == "mqtt":
        sender = MqttSender(
            url=options.mqtt_url, max_batch=options.batch, ca_file=options.mqtt_ca_file
        )
        await sender.connect()
        return sender
    raise SimulationError(f"unknown protocol {options.protocol!r}: osmand, json or mqtt")


def check(*, options: Options, devices: Sequence[DeviceCredential]) -> list[DeviceCredential]:
    """The devices the run uses; SimulationError for options that cannot work."""
    if options.protocol not in PROTOCOLS:
        raise SimulationError(f"unknown protocol {options.protocol!r}: osmand, json or mqtt")
    wanted = len(devices) if options.vehicles is None else options.vehicles
    if wanted < 1:
        raise SimulationError("no devices to simulate: the devices file is empty")
    if wanted > len(devices):
        raise SimulationError(
            f"--vehicles {wanted} needs {wanted} devices, but the devices file has only "
            f"{len(devices)}: ask for fewer, or seed more (`ctafleet demo --vehicles {wanted}` "
            "on a new data directory)"
        )
    if not (options.rate > 0 and math.isfinite(options.rate)):
        raise SimulationError("--rate must be a positive number of fixes per second")
    if not (options.speedup > 0 and math.isfinite(options.speedup)):
        raise SimulationError("--speedup must be a positive number")
    if options.duration_s < 0:
        raise SimulationError("--duration must be 0 (until stopped) or a number of seconds")
    if options.speedup > 1 and not options.duration_s:
        raise SimulationError(
            "--speedup above 1 needs a --duration: simulated time would run ahead of the "
            "server's clock, which refuses fixes from the future"
        )
    if options.protocol != "mqtt":
        parts = urlsplit(options.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SimulationError(f"--url {options.url!r}: expected http://host[:port]")
    if options.batch < 1 or options.concurrency < 1:
        raise SimulationError("--batch and --concurrency must be at least 1")
    chosen = list(devices[:wanted])
    if options.protocol == "mqtt":
        for device in chosen:
            if any(c in device.unique_id for c in "+#/"):
                raise SimulationError(
                    f"device {device.unique_id!r}: an MQTT topic level cannot hold + # or /"
                )
    return chosen


async def simulate(
    *,
    options: Options,
    devices: Sequence[DeviceCredential],
    client: httpx.AsyncClient | None = None,
    stop: asyncio.Event | None = None,
    start: datetime | None = None,
    clock: Clock | None = None,
    sleep: Sleep = asyncio.sleep,
    echo: Echo = print,
) -> Stats:
    """Run a simulated fleet until `stop` is set or `options.duration_s` has passed.

    Simulated time starts at `start`, by default so that it reaches the present as the run
    ends (`speedup` 1: now), since servers refuse fixes from the future."""
    chosen = check(options=options, devices=devices)
    if start is None:
        now = (clock or SystemClock()).now().replace(microsecond=0)
        start = now - timedelta(seconds=(options.speedup - 1) * options.duration_s)
    vehicles = make_fleet(
        unique_ids=[d.unique_id for d in chosen],
        seed=options.seed,
        start=start,
        centre=options.centre,
        radius_m=options.radius_m,
    )
    sender = await open_sender(options=options, client=client)
    try:
        runner = Runner(
            vehicles=vehicles,
            devices=chosen,
            sender=sender,
            options=options,
            stop=stop,
            sleep=sleep,
            echo=echo,
        )
        return await runner.run()
    finally:
        await sender.aclose()
