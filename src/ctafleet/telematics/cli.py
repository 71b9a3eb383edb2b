"""`ctafleet simulate`: a simulated fleet driving through the real ingest protocols; `ctafleet
mqtt`: the MQTT bridge.

Exit codes: 0 after a clean stop (duration reached, Ctrl-C or SIGTERM), 1 for a problem the
message explains (devices file, unreachable server, refused credential), 2 for bad settings,
130 when a second Ctrl-C cut the final sending short.

`ctafleet mqtt` exits 0 after SIGTERM or Ctrl-C, 1 when Redis is not configured, the metrics
port is taken or the broker refuses the bridge's settings, 2 for bad settings.
"""

from __future__ import annotations

import asyncio
import signal
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from pydantic import ValidationError

from ctafleet.clihelp import HELP

if TYPE_CHECKING:
    from ctafleet.config import Settings
    from ctafleet.telematics.simulate import DeviceCredential, Options, Stats


class SimProtocol(StrEnum):
    osmand = "osmand"
    json = "json"
    mqtt = "mqtt"


simulate_app = typer.Typer(
    **HELP,
    help="Drive a simulated fleet through the ingest protocols.",
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code)


def _load_settings() -> Settings:
    """The settings, or exit 2 with every problem listed."""
    from ctafleet.config import format_validation_error, load_settings, settings_problems

    try:
        return load_settings()
    except ValidationError as exc:
        for line in settings_problems() or format_validation_error(exc):
            typer.secho(f"error: {line}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None


def _default_devices_file() -> Path:
    from ctafleet.telematics.simulate import DEVICES_FILE

    return _load_settings().data_dir / DEVICES_FILE


@simulate_app.command("simulate")
def simulate(
    url: Annotated[str, typer.Option(help="The CTAFleet server (osmand and json).")] = (
        "http://127.0.0.1:8000"
    ),
    devices: Annotated[
        Path | None,
        typer.Option(
            "--devices",
            help="JSON list of {unique_id, credential}. Default: demo-devices.json in the "
            "data directory, as `ctafleet demo` writes it.",
            dir_okay=False,
        ),
    ] = None,
    protocol: Annotated[
        SimProtocol, typer.Option(help="How the devices send: osmand, json or mqtt.")
    ] = SimProtocol.osmand,
    vehicles: Annotated[
        int | None,
        typer.Option(min=1, help="Vehicles to drive (default: one per device in the file)."),
    ] = None,
    rate: Annotated[
        float,
        typer.Option(
            min=0.001,
            help="Fixes per second across the fleet; each vehicle reports every "
            "vehicles/rate seconds.",
        ),
    ] = 10.0,
    duration: Annotated[
        float, typer.Option(min=0, help="Seconds to run; 0 until stopped (Ctrl-C, SIGTERM).")
    ] = 0.0,
    seed: Annotated[int, typer.Option(help="Routes and driving are the same for a seed.")] = 1,
    speedup: Annotated[
        float,
        typer.Option(
            min=0.001,
            help="Simulated time runs this many times faster than wall time (above 1 needs "
            "--duration: the run then ends at the present).",
        ),
    ] = 1.0,
    mqtt_url: Annotated[
        str,
        typer.Option(
            help="The MQTT broker, mqtt://[user:password@]host[:port], or mqtts:// for TLS."
        ),
    ] = "mqtt://127.0.0.1:1883",
    mqtt_ca_file: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            help="mqtts://: PEM file of the CA the broker's certificate chains to (default: "
            "the system's CA certificates).",
        ),
    ] = None,
    batch: Annotated[
        int, typer.Option(min=1, help="json and mqtt: most fixes of a device per message.")
    ] = 10,
    concurrency: Annotated[int, typer.Option(min=1, max=256, help="Requests in flight.")] = 8,
    report_every: Annotated[
        float, typer.Option(min=0, help="Seconds between progress lines; 0 for none.")
    ] = 10.0,
    lat: Annotated[float, typer.Option(min=-85, max=85, help="Centre latitude.")] = 41.88,
    lon: Annotated[float, typer.Option(min=-180, max=180, help="Centre longitude.")] = -87.63,
    radius: Annotated[
        float, typer.Option(min=100, help="Metres around the centre the routes stay within.")
    ] = 8000.0,
) -> None:
    """Drive a simulated fleet (one vehicle per device) through OsmAnd, JSON batches or MQTT,
    as real trackers would: stops, idling, speeding, ignition and battery."""
    from ctafleet.telematics.simulate import Options, SimulationError, load_devices

    options = Options(
        url=url,
        protocol=protocol.value,
        vehicles=vehicles,
        rate=rate,
        duration_s=duration,
        seed=seed,
        speedup=speedup,
        centre=(lat, lon),
        radius_m=radius,
        mqtt_url=mqtt_url,
        mqtt_ca_file=mqtt_ca_file,
        batch=batch,
        concurrency=concurrency,
        report_every_s=report_every,
    )
    path = devices if devices is not None else _default_devices_file()
    try:
        chosen = load_devices(path=path)
        asyncio.run(_run(options, chosen))
    except SimulationError as exc:
        raise _fail(str(exc)) from None
    except asyncio.CancelledError:
        raise _fail("stopped before everything pending was sent", 130) from None


async def _run(options: Options, devices: list[DeviceCredential]) -> Stats:
    from ctafleet.telematics.simulate import simulate as run

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()

    def on_signal() -> None:
        if stop.is_set() and main is not None:
            main.cancel()  # a second time: no more waiting for what is pending
            return
        typer.echo("stopping: sending what is pending (Ctrl-C again to quit at once)", err=True)
        stop.set()

    for number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(number, on_signal)
    try:
        return await run(options=options, devices=devices, stop=stop, echo=typer.echo)
    finally:
        for number in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(number)


def mqtt(
    metrics_host: Annotated[str, typer.Option(help="Address of the metrics listener.")] = (
        "127.0.0.1"
    ),
    metrics_port: Annotated[
        int,
        typer.Option(help="Serve Prometheus metrics on this port (0: none).", min=0, max=65535),
    ] = 0,
) -> None:
    """Feed device messages from the MQTT broker into the telemetry queue (Redis).

    Subscribes to <CTAFLEET_MQTT__TOPIC_PREFIX>/+ at QoS 1 on a persistent session; a message
    is acknowledged once its points are queued. SIGTERM or Ctrl-C finish what is in hand and
    disconnect: what is not yet acknowledged stays at the broker for the next start."""
    settings = _load_settings()
    if not settings.redis.url:
        raise _fail(
            "the MQTT bridge feeds the Redis queue that `ctafleet worker` drains: set "
            "CTAFLEET_REDIS__URL"
        )
    from ctafleet.observability import metrics
    from ctafleet.observability.logging import configure_logging
    from ctafleet.telematics.ingest import mqtt_bridge

    configure_logging(settings)
    metrics.set_build_info("mqtt")
    if metrics_port:
        from prometheus_client import start_http_server

        try:
            start_http_server(metrics_port, addr=metrics_host, registry=metrics.REGISTRY)
        except OSError as exc:
            raise _fail(
                f"cannot listen on {metrics_host}:{metrics_port}: {exc.strerror or exc}"
            ) from None
    try:
        mqtt_bridge.run_until_signalled(settings)
    except mqtt_bridge.BridgeError as exc:
        raise _fail(str(exc)) from None
