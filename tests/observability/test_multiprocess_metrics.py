"""`ctafleet serve --workers 2`: /metrics adds up every worker's requests (multiprocess mode)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.deploy.live import CTAFLEET, ApiProcess, assert_owns_port, http, wait_for
from tests.kit.net import free_port


def _healthz_count(exposition: str) -> float:
    match = re.search(
        r'^ctafleet_http_requests_total\{method="GET",route="/healthz",status="200"\} (\S+)$',
        exposition,
        re.M,
    )
    return float(match.group(1)) if match else 0.0


@pytest.mark.slow
def test_metrics_aggregate_across_worker_processes(tmp_path: Path) -> None:
    api = ApiProcess(tmp_path)
    api.cli("db", "upgrade")
    multiproc = tmp_path / "metrics-multiproc"
    api.port = free_port()  # picked just before the bind: less time for another test to take it
    log_path = tmp_path / "serve.log"
    log = log_path.open("ab")
    proc = subprocess.Popen(
        [CTAFLEET, "serve", "--port", str(api.port), "--workers", "2"],
        env={**api.env(), "PROMETHEUS_MULTIPROC_DIR": str(multiproc)},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(lambda: http("GET", api.url + "/healthz")[0] == 200, 60, "two workers up")
        assert_owns_port(proc, log_path)
        # Each worker writes its own files; wait until both have served something.
        sent = 1
        deadline_pids: set[str] = set()
        for _ in range(400):
            assert http("GET", api.url + "/healthz")[0] == 200
            sent += 1
            deadline_pids = {p.stem.rsplit("_", 1)[-1] for p in multiproc.glob("counter_*.db")}
            if len(deadline_pids) >= 2 and sent >= 40:
                break
        assert len(deadline_pids) >= 2, "requests never reached a second worker"
        # Whichever worker answers the scrape, the count is the total of both.
        for _ in range(6):
            status, body = http("GET", api.url + "/metrics")
            assert status == 200
            assert _healthz_count(body.decode()) == sent
        assert 'ctafleet_build_info{commit="unknown",process="api",version=' in body.decode()
    finally:
        proc.terminate()
        proc.wait(20)
