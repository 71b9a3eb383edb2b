"""The log shipping path: `ctafleet serve` writes JSON lines, syslog-ng (Debian package) tails
them and pushes them to Loki's HTTP push API. Loki itself cannot be installed here, so the
receiving end is a stand-in (a fake) that implements the push endpoint and checks each
request the way Loki's JSON decoder does."""

from __future__ import annotations

import http.server as httpserver
import json
import os
import shutil
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import service_unavailable
from tests.deploy.live import MONITORING, ApiProcess, http, wait_for

CONFIG = MONITORING / "logs" / "syslog-ng.conf"
PASSWORD = "Shipping-Test-Password-9"


class FakeLoki:
    def __init__(self) -> None:
        self.entries: list[tuple[dict[str, str], str, str]] = []  # (labels, ts, line)
        self.errors: list[str] = []
        loki = self

        class Handler(httpserver.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                status = 204
                try:
                    assert self.path == "/loki/api/v1/push", self.path
                    assert self.headers.get("Content-Type") == "application/json"
                    payload = json.loads(body)
                    for stream in payload["streams"]:
                        labels = stream["stream"]
                        assert all(isinstance(v, str) for v in labels.values())
                        for ts, line in stream["values"]:
                            assert isinstance(ts, str)
                            assert ts.isdigit()
                            assert isinstance(line, str)
                            loki.entries.append((labels, ts, line))
                except (AssertionError, ValueError, KeyError, TypeError) as exc:
                    loki.errors.append(f"{exc!r}: {body[:300]!r}")
                    status = 400
                self.send_response(status)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = httpserver.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/loki/api/v1/push"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for _, _, line in self.entries]


@pytest.fixture
def loki() -> Iterator[FakeLoki]:
    fake = FakeLoki()
    yield fake
    fake.server.shutdown()


@pytest.mark.slow
def test_json_logs_reach_loki_intact(tmp_path: Path, loki: FakeLoki) -> None:
    syslog_ng = shutil.which("syslog-ng")
    if not syslog_ng:
        service_unavailable("syslog-ng is not installed: run scripts/install-monitoring-tools.sh")
    api = ApiProcess(tmp_path / "api", env_extra={"CTAFLEET_OBSERVABILITY__LOG_LEVEL": "INFO"})
    api.data_dir.mkdir()
    api.cli("db", "upgrade")
    api.cli("tenants", "create", "ship")
    api.cli(
        "users",
        "create",
        "--tenant",
        "ship",
        "--email",
        "a@ship.example.org",
        "--role",
        "admin",
        stdin=PASSWORD + "\n",
    )
    api.start()
    state = tmp_path / "shipper"
    state.mkdir()
    env = {
        **os.environ,
        "CTAFLEET_LOG_FILE": str(api.log_path),
        "LOKI_PUSH_URL": loki.url,
        "LOG_SHIPPER_STATE": str(state),
    }
    shipper = subprocess.Popen(
        [
            syslog_ng,
            "-F",
            "-f",
            str(CONFIG),
            "-R",
            str(state / "persist"),
            "-p",
            str(state / "pid"),
            "-c",
            str(state / "ctl"),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        ids = [uuid.uuid4().hex for _ in range(5)]
        for rid in ids:
            status, _ = http(
                "POST",
                api.url + "/api/v1/auth/login",
                {"email": "a@ship.example.org", "password": PASSWORD},
                headers={"X-Request-ID": rid},
            )
            assert status == 200
        wait_for(
            lambda: {line.get("request_id") for line in loki.lines()} >= set(ids),
            30,
            "the request log lines at the fake Loki",
        )
    finally:
        shipper.terminate()
        output = shipper.communicate(timeout=10)[0].decode(errors="replace")
        api.stop()
    assert not loki.errors, loki.errors
    shipped = loki.lines()
    access = [
        line for line in shipped if line.get("request_id") in ids and line.get("event") == "request"
    ]
    assert len(access) == len(ids), output[-2000:]
    for line in access:
        assert line["route"] == "/api/v1/auth/login"
        assert line["status"] == 200
        assert {"timestamp", "level", "duration_ms"} <= set(line)
    assert all(labels == {"job": "ctafleet"} for labels, _, _ in loki.entries)
    raw = "\n".join(line for _, _, line in loki.entries)
    assert PASSWORD not in raw
