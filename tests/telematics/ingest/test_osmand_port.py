"""`ctafleet serve --osmand-port`: a real server process with the OsmAnd endpoint on a port of
its own (any path, any method), next to the API, on the embedded default."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.kit.net import free_port, wait_listening


@pytest.fixture
def server(tmp_path: Path) -> Iterator[dict[str, Any]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CTAFLEET_")}
    env |= {"CTAFLEET_DATA_DIR": str(tmp_path), "CTAFLEET_OBSERVABILITY__LOG_LEVEL": "WARNING"}
    seed = subprocess.run(
        [sys.executable, "-m", "ctafleet", "demo", "--no-serve", "--vehicles", "2"],
        env=env,
        capture_output=True,
        timeout=300,
        check=False,
    )
    assert seed.returncode == 0, seed.stderr.decode()
    devices = json.loads((tmp_path / "demo-devices.json").read_text())
    port, osmand_port = free_port(), free_port()
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "ctafleet", "serve", "--port", str(port),
         "--osmand-port", str(osmand_port)],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_listening(port, process)
        wait_listening(osmand_port, process)
        yield {
            "process": process,
            "api": f"http://127.0.0.1:{port}",
            "osmand": f"http://127.0.0.1:{osmand_port}",
            "devices": devices,
            "db": tmp_path / "ctafleet.db",
            "log": tmp_path / "serve.log",
        }
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        log.close()


def _stored(db: Path, unique_id: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(
            "SELECT p.lat, p.lon FROM positions p JOIN devices d ON d.id = p.device_id "
            "WHERE d.unique_id = ? ORDER BY p.fix_time",
            (unique_id,),
        ).fetchall()


def test_the_dedicated_port_takes_osmand_on_any_path_and_method(server: dict[str, Any]) -> None:
    first, second = server["devices"]
    now = int(time.time())
    with httpx.Client(timeout=10) as client:
        # Traccar Client's usual form: a GET with the query, the credential as `token`.
        r = client.get(
            server["osmand"] + "/",
            params={"id": first["unique_id"], "token": first["credential"], "lat": "41.1",
                    "lon": "-87.1", "timestamp": str(now - 20)},
        )  # fmt: skip
        assert r.status_code == 200, r.text
        assert r.content == b""
        # A POST with a form body to some other path, the credential as the last segment.
        r = client.post(
            server["osmand"] + "/gps/" + first["credential"],
            data={"id": first["unique_id"], "lat": "41.2", "lon": "-87.2",
                  "timestamp": str(now - 10)},
        )  # fmt: skip
        assert r.status_code == 200, r.text
        r = client.get(
            server["osmand"] + "/",
            params={"id": second["unique_id"], "token": first["credential"], "lat": "1",
                    "lon": "1"},
        )  # fmt: skip
        assert r.status_code == 401
        # The API port still answers the API (and its own /ingest/osmand).
        assert client.get(server["api"] + "/healthz").status_code == 200
        r = client.get(
            server["api"] + "/ingest/osmand",
            params={"id": first["unique_id"], "token": first["credential"], "lat": "41.3",
                    "lon": "-87.3", "timestamp": str(now)},
        )  # fmt: skip
        assert r.status_code == 200
    deadline = time.monotonic() + 30
    while len(_stored(server["db"], first["unique_id"])) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _stored(server["db"], first["unique_id"]) == [
        (41.1, -87.1),
        (41.2, -87.2),
        (41.3, -87.3),
    ]
    assert _stored(server["db"], second["unique_id"]) == []
    process = server["process"]
    process.send_signal(signal.SIGTERM)
    process.wait(30)
    assert "Traceback" not in server["log"].read_text()


def test_the_osmand_port_must_differ_from_the_api_port(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CTAFLEET_")}
    env["CTAFLEET_DATA_DIR"] = str(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "ctafleet", "serve", "--port", "8123", "--osmand-port", "8123"],
        env=env, capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert b"--osmand-port must differ" in result.stderr
