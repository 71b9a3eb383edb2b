"""The simulated fleet: its vehicle model, and its senders through the real ingest endpoints
(in-process app), a throttling server and the real MQTT broker; `ctafleet simulate`."""

from __future__ import annotations

import asyncio
import http.server
import itertools
import json
import math
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from ctafleet.kernel.units import MPS_PER_KNOT
from ctafleet.telematics.cli import simulate_app
from ctafleet.telematics.ingest import batch
from ctafleet.telematics.models import Device, Position
from ctafleet.telematics.simulate import (
    DEFAULT_CENTRE,
    DEFAULT_RADIUS_M,
    MAX_SPEED_MPS,
    CredentialRefused,
    Delivery,
    DeviceCredential,
    Fix,
    JsonSender,
    MqttSender,
    Options,
    OsmAndSender,
    SimulationError,
    Unreachable,
    Vehicle,
    batch_point,
    load_devices,
    make_fleet,
    mqtt_topic,
    osmand_params,
    parse_mqtt_url,
    simulate,
)
from tests.conftest import service_unavailable
from tests.kit.app import Api, TenantUsers
from tests.telematics.ingest.kit import device, drain

START = datetime(2026, 3, 2, 7, 0, tzinfo=UTC)
M_PER_DEG = math.pi * 6_371_008.8 / 180.0
MQTT_URL = os.environ.get("CTAFLEET_TEST_MQTT_URL", "mqtt://127.0.0.1:1883")


def _drive(vehicle: Vehicle, *, seconds: int, every_s: float = 1.0) -> list[Fix]:
    return [vehicle.step(every_s) for _ in range(int(seconds / every_s))]


def _metres(a: Fix, b: Fix) -> float:
    dy = (b.lat - a.lat) * M_PER_DEG
    dx = (b.lon - a.lon) * M_PER_DEG * math.cos(math.radians(a.lat))
    return math.hypot(dx, dy)


def _runs(flags: list[bool]) -> list[int]:
    """Lengths of the runs of True."""
    runs, current = [], 0
    for flag in flags:
        if flag:
            current += 1
        elif current:
            runs.append(current)
            current = 0
    if current:
        runs.append(current)
    return runs


@pytest.fixture(scope="module")
def hour() -> list[list[Fix]]:
    """An hour of a ten-vehicle fleet, a fix a second."""
    fleet = make_fleet(unique_ids=[f"sim-{i}" for i in range(10)], seed=11, start=START)
    return [_drive(v, seconds=3600) for v in fleet]


# --- the model -------------------------------------------------------------------------------


def test_the_model_is_deterministic_for_a_seed() -> None:
    def run(seed: int) -> list[Fix]:
        fleet = make_fleet(unique_ids=["a", "b", "c"], seed=seed, start=START)
        return [fix for v in fleet for fix in _drive(v, seconds=900, every_s=5)]

    assert run(3) == run(3)
    assert run(3) != run(4)
    # A vehicle's driving depends on its place in the fleet and the seed, not its device id.
    [first] = make_fleet(unique_ids=["x"], seed=3, start=START)
    [other] = make_fleet(unique_ids=["y"], seed=3, start=START)
    assert [(f.lat, f.speed_mps) for f in _drive(first, seconds=600)] == [
        (f.lat, f.speed_mps) for f in _drive(other, seconds=600)
    ]


def test_step_moves_simulated_time_exactly() -> None:
    [vehicle] = make_fleet(unique_ids=["a"], seed=1, start=START)
    fixes = [vehicle.step(dt) for dt in (0.0, 2.5, 0.25, 3600.0)]
    assert [f.time - START for f in fixes] == [
        timedelta(0),
        timedelta(seconds=2.5),
        timedelta(seconds=2.75),
        timedelta(seconds=3602.75),
    ]
    assert all(f.time.tzinfo is UTC and f.device == "a" for f in fixes)
    with pytest.raises(ValueError, match="timezone-aware"):
        Vehicle(unique_id="a", seed=1, start=START.replace(tzinfo=None))


def test_an_hour_of_driving_is_physically_plausible(hour: list[list[Fix]]) -> None:
    lat0, lon0 = DEFAULT_CENTRE
    for fixes in hour:
        for a, b in itertools.pairwise(fixes):
            assert 0 <= b.speed_mps <= MAX_SPEED_MPS + 1
            # Within what a vehicle does: about 0.45 g of braking at the hardest.
            assert abs(b.speed_mps - a.speed_mps) <= 5.0
            # No teleporting: at most the faster of the two speeds, plus the GPS noise.
            noise = 3 * (a.accuracy_m + b.accuracy_m)
            assert _metres(a, b) <= max(a.speed_mps, b.speed_mps) + 1 + noise
        for fix in fixes:
            assert 3 <= fix.accuracy_m <= 10
            assert 0 <= fix.battery_pct <= 100
            assert 0 <= fix.course_deg < 360
            assert 150 < fix.altitude_m < 210
            assert fix.charging == fix.ignition
            dy = (fix.lat - lat0) * M_PER_DEG
            dx = (fix.lon - lon0) * M_PER_DEG * math.cos(math.radians(lat0))
            assert math.hypot(dx, dy) <= DEFAULT_RADIUS_M * math.sqrt(2) + 50


def test_an_hour_has_stops_idling_ignition_off_and_speeding(hour: list[list[Fix]]) -> None:
    speeding_vehicles = 0
    for fixes in hour:
        moving = [f.speed_mps > 0 for f in fixes]
        stops = [n for n in _runs([not m for m in moving]) if n >= 60]
        assert stops, "every vehicle stops at least once an hour"
        assert any(moving), "and drives"
        # Speeding: above 30 m/s for 20-60 s (a stop ahead may cut an episode short).
        episodes = _runs([f.speed_mps > 30 for f in fixes])
        assert all(n <= 61 for n in episodes)
        if any(n >= 20 for n in episodes):
            speeding_vehicles += 1
    assert speeding_vehicles >= 5
    idle = sum(1 for fixes in hour for f in fixes if f.speed_mps == 0 and f.ignition)
    off = sum(1 for fixes in hour for f in fixes if not f.ignition)
    assert idle > 600
    assert off > 600
    # Driving is always with the ignition on.
    assert all(f.ignition for fixes in hour for f in fixes if f.speed_mps > 0)


def test_the_battery_charges_with_the_ignition_on_and_drains_with_it_off(
    hour: list[list[Fix]],
) -> None:
    charged = drained = 0
    for fixes in hour:
        for a, b in itertools.pairwise(fixes):
            if a.ignition and b.ignition:
                assert b.battery_pct >= a.battery_pct
                charged += b.battery_pct > a.battery_pct
            elif not a.ignition and not b.ignition:
                assert b.battery_pct <= a.battery_pct
                drained += b.battery_pct < a.battery_pct
    assert charged
    assert drained


def test_the_heading_is_the_bearing_of_travel(hour: list[list[Fix]]) -> None:
    checked = 0
    for fixes in hour:
        for a, b in zip(fixes, fixes[10:], strict=False):
            # Ten seconds on the same leg at speed: well clear of the GPS noise.
            if a.course_deg != b.course_deg or min(a.speed_mps, b.speed_mps) < 10:
                continue
            dy = (b.lat - a.lat) * M_PER_DEG
            dx = (b.lon - a.lon) * M_PER_DEG * math.cos(math.radians(a.lat))
            bearing = math.degrees(math.atan2(dx, dy)) % 360
            # The noise of both fixes, sideways to a move of at least 100 m.
            noise = 1.5 * (a.accuracy_m + b.accuracy_m)
            tolerance = math.degrees(math.atan2(noise, math.hypot(dx, dy))) + 1
            assert abs((bearing - a.course_deg + 180) % 360 - 180) < tolerance
            checked += 1
    assert checked > 1000


def test_osmand_parameters_are_those_of_traccar_client() -> None:
    [vehicle] = make_fleet(unique_ids=["imei-1"], seed=2, start=START)
    fix = next(f for f in _drive(vehicle, seconds=3600) if f.speed_mps > 5)
    params = osmand_params(fix)
    assert set(params) == {
        "id",
        "timestamp",
        "lat",
        "lon",
        "speed",
        "bearing",
        "altitude",
        "accuracy",
        "batt",
        "charge",
        "ignition",
    }
    assert params["id"] == "imei-1"
    assert params["timestamp"] == str(int(fix.time.timestamp()))  # whole epoch seconds
    assert float(params["speed"]) == pytest.approx(fix.speed_mps / MPS_PER_KNOT, abs=1e-3)
    assert params["charge"] in ("true", "false")
    half = Fix(**{**_as_dict(fix), "time": fix.time + timedelta(milliseconds=250)})
    assert osmand_params(half)["timestamp"].endswith(".250")


def _as_dict(fix: Fix) -> dict[str, Any]:
    return {name: getattr(fix, name) for name in Fix.__slots__}


# --- senders through the in-process app ------------------------------------------------------


async def _positions(api: Api, t: TenantUsers, device_id: str) -> list[dict[str, Any]]:
    r = await api.client.get(
        f"/api/v1/devices/{device_id}/positions", params={"limit": 1000}, headers=t.headers()
    )
    assert r.status_code == 200, r.text
    data: list[dict[str, Any]] = r.json()["data"]
    return data


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _assert_stored(rows: list[dict[str, Any]], fixes: list[Fix], speed_abs: float) -> None:
    assert [_time(r["fix_time"]) for r in rows] == [f.time for f in fixes]
    for row, fix in zip(rows, fixes, strict=True):
        assert row["lat"] == pytest.approx(fix.lat, abs=1e-6)
        assert row["lon"] == pytest.approx(fix.lon, abs=1e-6)
        assert row["speed_mps"] == pytest.approx(fix.speed_mps, abs=speed_abs)
        assert row["course_deg"] == pytest.approx(fix.course_deg, abs=0.05)
        assert row["accuracy_m"] == pytest.approx(fix.accuracy_m, abs=0.05)
        assert row["battery_pct"] == pytest.approx(fix.battery_pct, abs=0.05)
        assert row["ignition"] is fix.ignition
        assert row["charging"] is fix.charging


def _moving_fixes(api: Api, uid: str, n: int) -> list[Fix]:
    """`n` fixes five seconds apart, ending before the app's clock, most of them moving."""
    [vehicle] = make_fleet(unique_ids=[uid], seed=5, start=api.clock.now() - timedelta(hours=2))
    fixes = _drive(vehicle, seconds=5 * n, every_s=5)
    assert sum(f.speed_mps > 5 for f in fixes) > n // 3
    return fixes


@pytest.mark.parametrize("auth", ["bearer", "token"])
async def test_the_osmand_sender_stores_its_fixes_with_speeds_from_knots(
    api: Api, tenant: TenantUsers, auth: Any
) -> None:
    d = await device(api, tenant)
    creds = DeviceCredential(d["unique_id"], d["credential"])
    fixes = _moving_fixes(api, d["unique_id"], 120)
    sender = OsmAndSender(url="http://testserver", client=api.client, auth=auth)
    for fix in fixes:
        assert await sender.deliver(device=creds, fixes=[fix]) == _accepted(1)
    await sender.aclose()  # not the app's client: it stays open
    assert await drain(api) == len(fixes)
    _assert_stored(await _positions(api, tenant, d["id"]), fixes, speed_abs=0.001)


def _accepted(n: int) -> Delivery:
    return Delivery(accepted=n)


async def test_the_json_sender_stores_batches_in_si_units(api: Api, tenant: TenantUsers) -> None:
    d = await device(api, tenant, protocol="json")
    creds = DeviceCredential(d["unique_id"], d["credential"])
    fixes = _moving_fixes(api, d["unique_id"], 95)
    sender = JsonSender(url="http://testserver", client=api.client, max_batch=10)
    for i in range(0, len(fixes), 10):
        chunk = fixes[i : i + 10]
        assert await sender.deliver(device=creds, fixes=chunk) == _accepted(len(chunk))
    assert await drain(api) == len(fixes)
    rows = await _positions(api, tenant, d["id"])
    _assert_stored(rows, fixes, speed_abs=0.001)
    assert rows[-1]["odometer_m"] == pytest.approx(fixes[-1].odometer_m, abs=0.1)


async def test_a_run_through_the_app_delivers_every_fix(api: Api, tenant: TenantUsers) -> None:
    made = [await device(api, tenant) for _ in range(3)]
    devices = [DeviceCredential(d["unique_id"], d["credential"]) for d in made]
    lines: list[str] = []
    stats = await simulate(
        options=Options(
            url="http://testserver",
            rate=30,
            duration_s=1.0,
            speedup=10,
            report_every_s=0.4,
        ),
        devices=devices,
        client=api.client,
        start=api.clock.now() - timedelta(hours=1),
        echo=lines.append,
    )
    assert stats.sent >= 20
    assert stats.accepted == stats.sent
    assert (stats.rejected, stats.retried, stats.unsent) == (0, 0, 0)
    await drain(api)
    stored = [len(await _positions(api, tenant, d["id"])) for d in made]
    assert sum(stored) == stats.accepted
    assert all(n >= 5 for n in stored)  # every vehicle reports, at its share of the rate
    assert any("sent" in line and "fixes/s" in line for line in lines[:-1])  # progress
    assert lines[-1].startswith("osmand: 3 vehicles")
    assert f"accepted {stats.accepted}" in lines[-1]


async def test_the_demo_fleet_drives_with_the_devices_file_the_demo_writes(
    api: Api, tmp_path: Path
) -> None:
    from ctafleet.demo import seed

    settings = api.settings.model_copy(update={"data_dir": tmp_path})
    await seed(api.db, settings, api.clock, vehicles=3)
    path = tmp_path / "demo-devices.json"
    assert path.exists(), "the demo tenant was already seeded in this database"
    devices = load_devices(path=path)
    assert len(devices) == 3
    stats = await simulate(
        options=Options(url="http://testserver", rate=15, duration_s=0.5, report_every_s=0),
        devices=devices,
        client=api.client,
        start=api.clock.now() - timedelta(minutes=10),
        echo=lambda _: None,
    )
    assert stats.sent >= 3
    assert stats.accepted == stats.sent
    await drain(api)
    async with api.db.system_session() as session:
        stored = await session.scalar(
            select(func.count())
            .select_from(Position)
            .join(Device, Device.id == Position.device_id)
            .where(Device.unique_id.in_([d.unique_id for d in devices]))
        )
    assert stored == stats.accepted


async def test_a_refused_credential_ends_the_run_with_its_device(
    api: Api, tenant: TenantUsers
) -> None:
    d = await device(api, tenant)
    wrong = DeviceCredential(d["unique_id"], "ctd_" + "x" * 40)
    with pytest.raises(CredentialRefused, match=f"credential refused for device {d['unique_id']}"):
        await simulate(
            options=Options(url="http://testserver", rate=10, duration_s=5, report_every_s=0),
            devices=[wrong],
            client=api.client,
            start=api.clock.now() - timedelta(hours=1),
            echo=lambda _: None,
        )


# --- a throttling server ---------------------------------------------------------------------


class Throttling:
    """A fake ingest server that answers 503 with Retry-After to its `nth` request."""

    def __init__(self, protocol: str, nth: int = 2) -> None:
        self.protocol = protocol
        self.nth = nth
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if len(self.requests) == self.nth:
            return httpx.Response(503, headers={"Retry-After": "7"}, json={"status": 503})
        if self.protocol == "osmand":
            return httpx.Response(200)
        points = json.loads(request.content)["points"]
        return httpx.Response(202, json={"accepted": len(points), "rejected": []})

    def received(self) -> list[tuple[str, str]]:
        """(device, fix time) of what the server took (a 503's request was not taken)."""
        taken = []
        for i, request in enumerate(self.requests, start=1):
            if i == self.nth:
                continue
            if self.protocol == "osmand":
                taken.append((request.url.params["id"], request.url.params["timestamp"]))
            else:
                body = json.loads(request.content)
                taken.extend((body["device"], p["time"]) for p in body["points"])
        return taken


@pytest.mark.parametrize("protocol", ["osmand", "json"])
async def test_a_503_is_retried_after_retry_after_and_nothing_is_lost(protocol: Any) -> None:
    server = Throttling(protocol)
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        await asyncio.sleep(0)

    async with httpx.AsyncClient(transport=httpx.MockTransport(server)) as client:
        stats = await simulate(
            options=Options(
                url="http://ingest.test",
                protocol=protocol,
                rate=20,
                duration_s=0.5,
                batch=3,
                concurrency=1,
                report_every_s=0,
            ),
            devices=[DeviceCredential("sim-a", "ctd_a"), DeviceCredential("sim-b", "ctd_b")],
            client=client,
            start=START,
            sleep=sleep,
            echo=lambda _: None,
        )
    assert slept == [7.0]
    refused, again = server.requests[1], server.requests[2]
    assert (again.url, again.content) == (refused.url, refused.content)  # the same, resent
    assert again.headers["authorization"] == refused.headers["authorization"]
    received = server.received()
    assert len(received) == len(set(received)) == stats.sent == stats.accepted
    assert stats.unsent == 0
    assert stats.retried == (
        1 if protocol == "osmand" else len(json.loads(refused.content)["points"])
    )


async def test_a_lost_connection_is_retried_once_the_server_was_reached() -> None:
    calls: list[httpx.Request] = []

    def flaky(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) in (2, 3):
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(200)

    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        await asyncio.sleep(0)

    async with httpx.AsyncClient(transport=httpx.MockTransport(flaky)) as client:
        stats = await simulate(
            options=Options(url="http://ingest.test", rate=10, duration_s=0.35, report_every_s=0),
            devices=[DeviceCredential("sim-a", "ctd_a")],
            client=client,
            start=START,
            sleep=sleep,
            echo=lambda _: None,
        )
    assert slept == [1.0, 2.0]  # backing off
    assert calls[1].url == calls[2].url == calls[3].url
    assert stats.retried == 2
    assert stats.accepted == stats.sent == len({c.url for c in calls})
    assert stats.unsent == 0


async def test_refusals_are_counted_with_their_reasons_and_not_resent() -> None:
    def server(request: httpx.Request) -> httpx.Response:
        if request.url.params["timestamp"] == str(int(START.timestamp())):
            problem = {"type": "/problems/osmand-future-fix", "status": 400}
            return httpx.Response(400, json=problem)
        return httpx.Response(500, json={"type": "/problems/internal", "status": 500})

    lines: list[str] = []
    async with httpx.AsyncClient(transport=httpx.MockTransport(server)) as client:
        stats = await simulate(
            options=Options(url="http://ingest.test", rate=10, duration_s=0.25, report_every_s=0),
            devices=[DeviceCredential("sim-a", "ctd_a")],
            client=client,
            start=START,
            echo=lines.append,
        )
    assert stats.rejected == stats.sent >= 2
    assert stats.retried == 0
    assert stats.reasons == {"osmand-future-fix": 1, "internal": stats.sent - 1}
    assert "(rejected: internal" in lines[-1]


async def test_setting_stop_ends_a_run_after_sending_what_is_pending() -> None:
    taken: list[httpx.Request] = []

    def server(request: httpx.Request) -> httpx.Response:
        taken.append(request)
        points = json.loads(request.content)["points"]
        return httpx.Response(202, json={"accepted": len(points), "rejected": []})

    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.3, stop.set)
    async with httpx.AsyncClient(transport=httpx.MockTransport(server)) as client:
        stats = await simulate(
            options=Options(
                url="http://ingest.test", protocol="json", rate=10, batch=3, report_every_s=0
            ),
            devices=[DeviceCredential("sim-a", "ctd_a")],
            client=client,
            stop=stop,
            start=START,
            echo=lambda _: None,
        )
    # Full batches while running; what was left goes out at the stop.
    batches = [len(json.loads(r.content)["points"]) for r in taken]
    assert stats.sent >= 3
    assert sum(batches) == stats.sent == stats.accepted
    assert max(batches) == 3
    assert stats.unsent == 0


async def test_an_unreachable_server_is_a_clear_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(Unreachable, match=f"cannot reach the server at http://127.0.0.1:{port}"):
        await simulate(
            options=Options(url=f"http://127.0.0.1:{port}", duration_s=5, report_every_s=0),
            devices=[DeviceCredential("sim-a", "ctd_a")],
            echo=lambda _: None,
        )


async def test_an_unreachable_broker_is_a_clear_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sender = MqttSender(url=f"mqtt://127.0.0.1:{port}")
    with pytest.raises(Unreachable, match=f"cannot reach the MQTT broker at 127.0.0.1:{port}"):
        await sender.connect()


def test_options_that_cannot_work_are_refused_with_a_reason() -> None:
    one = [DeviceCredential("sim-a", "ctd_a")]

    def refused(**options: Any) -> str:
        with pytest.raises(SimulationError) as caught:
            asyncio.run(simulate(options=Options(**options), devices=one, echo=lambda _: None))
        return str(caught.value)

    assert "the devices file has only 1" in refused(vehicles=2)
    assert "needs a --duration" in refused(speedup=10)
    assert "--rate" in refused(rate=0)
    assert "expected http://host" in refused(url="127.0.0.1:8000")
    with pytest.raises(SimulationError, match="expected mqtt://"):
        parse_mqtt_url("http://broker")


# --- MQTT, on the real broker ----------------------------------------------------------------


@pytest.fixture
def broker() -> Iterator[Any]:
    """A subscriber on the broker: `(client, messages)`, messages a queue of (topic, body)."""
    from paho.mqtt.client import Client, MQTTMessage
    from paho.mqtt.enums import CallbackAPIVersion

    target = parse_mqtt_url(MQTT_URL)
    try:
        socket.create_connection((target.host, target.port), timeout=2).close()
    except OSError as exc:
        service_unavailable(f"no MQTT broker at {MQTT_URL} (CTAFLEET_TEST_MQTT_URL): {exc}")
    messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
    subscribed: queue.Queue[int] = queue.Queue()

    def on_message(_c: Any, _u: Any, message: MQTTMessage) -> None:
        messages.put((message.topic, bytes(message.payload)))

    client = Client(CallbackAPIVersion.VERSION2)
    if target.username:
        client.username_pw_set(target.username, target.password)
    client.on_message = on_message
    client.on_subscribe = lambda _c, _u, mid, _r, _p: subscribed.put(mid)
    client.connect(target.host, target.port)
    client.loop_start()
    try:
        yield client, messages, subscribed
    finally:
        client.disconnect()
        client.loop_stop()


def _subscribe(broker: Any, topic: str) -> None:
    client, _, subscribed = broker
    _, mid = client.subscribe(topic, qos=1)
    assert subscribed.get(timeout=10) == mid


async def _next_message(broker: Any) -> tuple[str, bytes]:
    _, messages, _ = broker
    message: tuple[str, bytes] = await asyncio.to_thread(messages.get, timeout=10)
    return message


async def test_the_mqtt_sender_publishes_the_batch_body_with_the_credential(
    broker: Any,
) -> None:
    uid = f"sim-{os.urandom(6).hex()}"
    creds = DeviceCredential(uid, "ctd_mqtt_secret")
    _subscribe(broker, mqtt_topic(uid))
    [vehicle] = make_fleet(unique_ids=[uid], seed=8, start=START)
    fixes = _drive(vehicle, seconds=40, every_s=10)
    sender = MqttSender(url=MQTT_URL, max_batch=10)
    await sender.connect()
    try:
        assert await sender.deliver(device=creds, fixes=fixes) == _accepted(4)
    finally:
        await sender.aclose()
    topic, payload = await _next_message(broker)
    assert topic == f"ctafleet/v1/telemetry/{uid}"
    body = json.loads(payload)
    assert body == {
        "device": uid,
        "credential": "ctd_mqtt_secret",
        "points": [batch_point(f) for f in fixes],
    }
    # Without the credential it is exactly a batch the ingest parser takes, in SI units.
    del body["credential"]
    parsed = batch.parse(
        json.dumps(body).encode(), now=START + timedelta(hours=1), max_points=100, device=uid
    )
    assert parsed.rejected == []
    assert [p.speed_mps for p in parsed.points] == pytest.approx(
        [f.speed_mps for f in fixes], abs=1e-3
    )
    assert [p.fix_time for p in parsed.points] == [f.time for f in fixes]


async def test_a_run_over_mqtt_publishes_every_fix(broker: Any) -> None:
    uids = [f"sim-{os.urandom(6).hex()}" for _ in range(2)]
    for uid in uids:
        _subscribe(broker, mqtt_topic(uid))
    stats = await simulate(
        options=Options(
            protocol="mqtt", mqtt_url=MQTT_URL, rate=20, duration_s=0.5, report_every_s=0
        ),
        devices=[DeviceCredential(uid, f"ctd_{uid}") for uid in uids],
        start=START,
        echo=lambda _: None,
    )
    assert stats.sent >= 5
    assert stats.accepted == stats.sent
    assert stats.unsent == 0
    published = 0
    while published < stats.sent:
        topic, payload = await _next_message(broker)
        body = json.loads(payload)
        assert topic == mqtt_topic(body["device"])
        assert body["device"] in uids
        assert body["credential"] == f"ctd_{body['device']}"
        published += len(body["points"])
    assert published == stats.sent


# --- the command -----------------------------------------------------------------------------


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in list(os.environ):
        if name.startswith("CTAFLEET_") and not name.startswith("CTAFLEET_TEST_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("CTAFLEET_DATA_DIR", str(tmp_path))
    return tmp_path


def _devices_file(path: Path, n: int) -> Path:
    path.write_text(
        json.dumps([{"unique_id": f"sim-{i}", "credential": f"ctd_{i}"} for i in range(n)])
    )
    return path


def test_the_command_has_help() -> None:
    result = CliRunner().invoke(simulate_app, ["--help"])
    assert result.exit_code == 0, result.output
    for option in ("--rate", "--vehicles", "--duration", "--protocol", "--speedup", "--devices"):
        assert option in result.output


def test_a_missing_devices_file_is_a_clear_error(cli_env: Path) -> None:
    result = CliRunner().invoke(simulate_app, [])
    assert result.exit_code == 1
    assert f"no devices file at {cli_env / 'demo-devices.json'}" in result.output
    assert "ctafleet demo" in result.output
    assert "Traceback" not in result.output
    result = CliRunner().invoke(simulate_app, ["--devices", str(cli_env / "nope.json")])
    assert result.exit_code == 1
    assert "no devices file at" in result.output


def test_fewer_devices_than_vehicles_is_a_clear_error(cli_env: Path) -> None:
    _devices_file(cli_env / "demo-devices.json", 2)
    result = CliRunner().invoke(simulate_app, ["--vehicles", "5"])
    assert result.exit_code == 1
    assert "--vehicles 5 needs 5 devices, but the devices file has only 2" in result.output


def test_an_unreachable_server_exits_with_a_message(cli_env: Path) -> None:
    path = _devices_file(cli_env / "devices.json", 1)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = CliRunner().invoke(
        simulate_app,
        ["--devices", str(path), "--url", f"http://127.0.0.1:{port}", "--duration", "5"],
    )
    assert result.exit_code == 1, result.output
    assert f"error: cannot reach the server at http://127.0.0.1:{port}" in result.output
    assert "Traceback" not in result.output
    assert "ctd_0" not in result.output  # no credential in any output


class _Ingest(http.server.BaseHTTPRequestHandler):
    """A stand-in OsmAnd endpoint for the process-level test: 200 to everything."""

    hits: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        _Ingest.hits.append(self.path)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.mark.parametrize("signal_number", [signal.SIGINT, signal.SIGTERM])
def test_the_command_stops_cleanly_on_a_signal(tmp_path: Path, signal_number: int) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Ingest)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Ingest.hits.clear()
    path = _devices_file(tmp_path / "devices.json", 2)
    url = f"http://127.0.0.1:{server.server_address[1]}"
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from ctafleet.telematics.cli import simulate_app; simulate_app()",
            *("--devices", str(path), "--url", url, "--rate", "20", "--report-every", "0"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while len(_Ingest.hits) < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(_Ingest.hits) >= 5
        process.send_signal(signal_number)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
        server.shutdown()
        server.server_close()
    assert process.returncode == 0, err
    assert "stopping: sending what is pending" in err
    summary = out.strip().splitlines()[-1]
    assert summary.startswith("osmand: 2 vehicles")
    assert "rejected 0" in summary
    assert "unsent 0" in summary
    assert f"accepted {len(_Ingest.hits)}," in summary
