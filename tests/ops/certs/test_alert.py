"""From the command to the page: `ctafleet ops certs check` reads the edge's certificate (two
days left) and another host's (90 days), writes its textfile, and a real Prometheus, scraping
that file as node-exporter's textfile collector exposes it, with the project's alert rules
(their `for:` shortened), fires CTAFleetTLSCertificateExpiring, critical and warning, for the
first host only. The promtool unit tests (app_test.yml) cover the rule's thresholds with
typed-in series; this covers the series the command really writes.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ctafleet.ops.certs import metrics
from tests.deploy.live import CTAFLEET, MONITORING, Prometheus, wait_for
from tests.kit.edge import TEST_HOST, CertAuthority, Edge
from tests.kit.net import free_port
from tests.kit.tools import tool
from tests.ops.certs.kit import OTHER_HOST, TlsServer

ALERT = "CTAFleetTLSCertificateExpiring"
RULES = [MONITORING / "prometheus" / "rules" / "alerts-app.yml"]


class Textfile(ThreadingHTTPServer):
    """/metrics: the file's current content, as node-exporter serves its textfiles."""

    daemon_threads = True

    def __init__(self, path: Path) -> None:
        self.path = path
        super().__init__(("127.0.0.1", 0), _Serve)


class _Serve(BaseHTTPRequestHandler):
    server: Textfile

    def do_GET(self) -> None:
        body = self.server.path.read_bytes() if self.server.path.exists() else b""
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def textfile(tmp_path: Path) -> Iterator[Textfile]:
    server = Textfile(tmp_path / "textfile" / "ctafleet-certs.prom")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.slow
def test_the_alert_fires_from_what_the_command_wrote(textfile: Textfile, tmp_path: Path) -> None:
    tool("prometheus")
    ca = CertAuthority()
    edge = Edge(f"127.0.0.1:{free_port()}")
    expiring, cert_pem, key_pem = ca.issue((TEST_HOST,), valid_for=dt.timedelta(days=2))
    edge.install_certificate(cert_pem, key_pem)
    fine, other_pem, other_key = ca.issue((OTHER_HOST,), valid_for=dt.timedelta(days=90))
    other = TlsServer(other_pem, other_key, tmp_path)
    prometheus = Prometheus(
        tmp_path / "prometheus",
        {"node-exporter": [f"127.0.0.1:{textfile.server_address[1]}"]},
        RULES,
    )
    edge.start()
    try:
        result = subprocess.run(
            [
                CTAFLEET, "ops", "certs", "check",
                f"{TEST_HOST}=127.0.0.1:{edge.https_port}",
                f"{OTHER_HOST}=127.0.0.1:{other.port}",
                "--metrics-file", str(textfile.path),
            ],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        prometheus.start()
        expr = f'{metrics.EXPIRY.name}{{host="{TEST_HOST}"}}'
        wait_for(lambda: prometheus.has_data(expr), 30, "the scraped expiry")
        value = float(prometheus.query(expr)["data"]["result"][0]["value"][1])
        assert value == expiring.not_valid_after_utc.timestamp()

        def firing() -> set[tuple[str, str]]:
            return {
                (a["labels"]["host"], a["labels"]["severity"])
                for a in prometheus.alerts()
                if a["labels"].get("alertname") == ALERT and a["state"] == "firing"
            }

        wait_for(lambda: {(TEST_HOST, "critical"), (TEST_HOST, "warning")} <= firing(), 60, ALERT)
        assert all(host == TEST_HOST for host, _severity in firing()), firing()
        # The near miss: scraped too, with 90 days left, outside even the warning's 14.
        assert prometheus.has_data(f'{metrics.EXPIRY.name}{{host="{OTHER_HOST}"}}')
        assert fine.not_valid_after_utc - dt.datetime.now(dt.UTC) > dt.timedelta(days=14)
    finally:
        prometheus.stop()
        other.close()
        edge.remove()
