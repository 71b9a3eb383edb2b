"""Traces: a real OTLP/HTTP exporter sending to a local stand-in collector (a fake: no
OpenTelemetry Collector runs here) that decodes the protobuf the way a collector does."""

from __future__ import annotations

import gzip
import http.server
import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from ctafleet.app import create_app
from ctafleet.observability.tracing import fastapi_telemetry
from tests.conftest import service_unavailable
from tests.kit.app import Api, Backend, make_settings, make_tenant


class FakeCollector:
    """Accepts OTLP/HTTP protobuf exports on /v1/traces and keeps the decoded spans."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        collector = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                request = ExportTraceServiceRequest.FromString(body)
                for rs in request.resource_spans:
                    resource = {a.key: a.value.string_value for a in rs.resource.attributes}
                    for ss in rs.scope_spans:
                        for span in ss.spans:
                            collector.spans.append(
                                {
                                    "name": span.name,
                                    "trace_id": span.trace_id.hex(),
                                    "span_id": span.span_id.hex(),
                                    "parent": span.parent_span_id.hex(),
                                    "kind": span.kind,
                                    "attributes": {a.key: _value(a.value) for a in span.attributes},
                                    "resource": resource,
                                }
                            )
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


@pytest.fixture
def collector() -> Iterator[FakeCollector]:
    c = FakeCollector()
    yield c
    c.close()


async def _traced_app(
    backend: Backend, tmp_path: Any, collector: FakeCollector, ratio: float
) -> Any:
    settings = make_settings(
        backend,
        tmp_path,
        observability={
            "traces_enabled": True,
            "otlp_endpoint": collector.url,
            "trace_sample_ratio": ratio,
            "log_level": "INFO",
        },
    )
    return create_app(settings)


async def test_request_spans_reach_the_collector_with_sql_children(
    backend: Backend,
    tmp_path: Any,
    collector: FakeCollector,
    capsys: pytest.CaptureFixture[str],
) -> None:
    app = await _traced_app(backend, tmp_path, collector, 1.0)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as client:
        api = Api(
            client=client,
            app=app,
            settings=app.state.ctafleet.settings,
            clock=app.state.ctafleet.clock,
            backend=backend,
        )
        tenant = await make_tenant(api, roles=["viewer"])
        r = await client.get("/api/v1/vehicles", headers=tenant.headers("viewer"))
        assert r.status_code == 200
    app.state.tracer_provider.shutdown()  # flushes; the lifespan does this in a server
    server = [s for s in collector.spans if s["attributes"].get("http.route") == "/api/v1/vehicles"]
    assert server, f"no server span for the route; got {[s['name'] for s in collector.spans]}"
    span = server[-1]
    assert span["name"] == "GET /api/v1/vehicles"
    assert span["resource"]["service.name"] == "ctafleet-api"
    children = [
        s
        for s in collector.spans
        if s["trace_id"] == span["trace_id"] and s["attributes"].get("db.system")
    ]
    assert children, "the request's SQL statements should be child spans of its trace"
    # The access-log line of the request carries the same trace id.
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    access = [x for x in lines if x.get("route") == "/api/v1/vehicles"]
    assert access, "no access-log line for the request"
    assert access[-1]["trace_id"] == span["trace_id"]
    assert access[-1]["span_id"]
    await app.state.ctafleet.db.dispose()


async def test_ratio_zero_samples_nothing(
    backend: Backend, tmp_path: Any, collector: FakeCollector
) -> None:
    app = await _traced_app(backend, tmp_path, collector, 0.0)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as client:
        assert (await client.get("/healthz")).status_code == 200
    app.state.tracer_provider.shutdown()  # flushes; the lifespan does this in a server
    assert collector.spans == []
    await app.state.ctafleet.db.dispose()


def test_tracing_is_off_by_default(backend: Backend, tmp_path: Any) -> None:
    app = create_app(make_settings(backend, tmp_path))
    assert app.state.tracer_provider is None
    assert fastapi_telemetry(None)["tracing"] is False


def test_azure_monitor_exporter_in_an_isolated_network(tmp_path: Any) -> None:
    """The Application Insights path, run in an empty network namespace (loopback only) so
    that nothing of the Azure distro can reach beyond this machine."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    if not shutil.which("unshare") or not shutil.which("ip"):
        service_unavailable("unshare/ip not available for an isolated network namespace")
    probe = Path(__file__).with_name("azure_monitor_probe.py")
    root = Path(__file__).resolve().parents[2]
    command = f"ip link set lo up && exec {sys.executable} {probe} {tmp_path}"
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "PYTHONPATH": str(root),
        "OTEL_EXPERIMENTAL_RESOURCE_DETECTORS": "otel",  # no cloud metadata lookups
        "APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL": "true",
    }
    result = subprocess.run(
        ["unshare", "-n", "sh", "-c", command],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0 and "unshare failed" in result.stderr:
        service_unavailable(f"cannot create a network namespace here: {result.stderr.strip()}")
    assert result.returncode == 0, result.stderr[-2000:]
    last = [line for line in result.stdout.splitlines() if line.startswith("[")][-1]
    envelopes = json.loads(last)
    requests = [e for e in envelopes if e["name"].endswith(".Request")]
    assert requests, f"no request telemetry; got {[e['name'] for e in envelopes]}"
    assert requests[0]["tags"]["ai.operation.name"] == "GET /healthz"
    assert requests[0]["tags"]["ai.cloud.role"].endswith("ctafleet-api")
