"""Real processes for live tests: the `ctafleet` commands the containers run, and Prometheus.

Everything listens on 127.0.0.1 only, on ports picked free, under a temporary directory.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.kit.net import free_port, stop_process

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "deploy" / "monitoring"
CTAFLEET = str(Path(sys.executable).with_name("ctafleet"))


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except (OSError, urllib.error.URLError, ValueError) as exc:
            last = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def http(
    method: str,
    url: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    timeout: float = 5,
) -> tuple[int, bytes]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        url,
        data=data,
        method=method,
        headers={
            "content-type": "application/json",
            **(headers or {}),
        },
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@dataclass
class ApiProcess:
    """`ctafleet serve` on a free port, with its own data directory (embedded SQLite)."""

    data_dir: Path
    port: int = field(default_factory=free_port)
    env_extra: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CTAFLEET_")}
        env.update(
            {
                "CTAFLEET_ENVIRONMENT": "test",
                "CTAFLEET_DATA_DIR": str(self.data_dir),
                "CTAFLEET_AUTH__SECRET_KEY": "live-test-" + secrets.token_urlsafe(32),
                "CTAFLEET_AUTH__LOGIN_RATE_LIMIT": "100000/minute",
                "CTAFLEET_AUTH__API_RATE_LIMIT": "100000/minute",
                "CTAFLEET_OBSERVABILITY__LOG_LEVEL": "WARNING",
            }
        )
        env.update(self.env_extra)
        return env

    def cli(
        self,
        *args: str,
        stdin: str | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> str:
        result = subprocess.run(
            [CTAFLEET, *args],
            env={**self.env(), **(extra_env or {})},
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, f"ctafleet {' '.join(args)}: {result.stderr}"
        return result.stdout

    def start(self) -> None:
        self.log_path = self.data_dir / f"serve-{self.port}.log"
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [CTAFLEET, "serve", "--host", "127.0.0.1", "--port", str(self.port)],
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_for(lambda: http("GET", self.url + "/healthz")[0] == 200, 30, f"api on {self.url}")
        assert_owns_port(self.proc, self.log_path)

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None


def assert_owns_port(proc: subprocess.Popen[bytes], log_path: Path) -> None:
    """The answer came from our process, not from another test's server that took the port
    between free_port() and the bind (uvicorn exits at once when the bind fails)."""
    time.sleep(0.3)
    if proc.poll() is not None:
        raise AssertionError(
            f"the server exited ({proc.returncode}); its port was probably taken:\n"
            + log_path.read_text(errors="replace")[-2000:]
        )


def shorten_for(rules_text: str, duration: str = "2s") -> str:
    """A test copy of a rules file: every `for:` shortened so alerts fire within seconds."""
    doc = yaml.safe_load(rules_text)
    for group in doc.get("groups", []):
        group["interval"] = "1s"
        for rule in group.get("rules", []):
            if "alert" in rule and "for" in rule:
                rule["for"] = duration
    return str(yaml.safe_dump(doc, sort_keys=False))


@dataclass
class Prometheus:
    workdir: Path
    targets: dict[str, list[str]]  # job -> host:port list
    rule_files: list[Path]
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        binary = shutil.which("prometheus")
        assert binary, "prometheus is not installed (scripts/install-monitoring-tools.sh)"
        rules_dir = self.workdir / "rules"
        rules_dir.mkdir(parents=True, exist_ok=True)
        copies = []
        for src in self.rule_files:
            dst = rules_dir / src.name
            dst.write_text(shorten_for(src.read_text()))
            copies.append(str(dst))
        config = {
            "global": {
                "scrape_interval": "1s",
                "evaluation_interval": "1s",
                "scrape_timeout": "900ms",
            },
            "rule_files": copies,
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": targets}]}
                for job, targets in self.targets.items()
            ],
        }
        cfg = self.workdir / "prometheus.yml"
        cfg.write_text(yaml.safe_dump(config))
        log = (self.workdir / "prometheus.log").open("ab")
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={cfg}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle",
                "--storage.tsdb.retention.time=1h",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_for(lambda: http("GET", self.url + "/-/ready")[0] == 200, 30, "prometheus ready")

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None

    def query(self, expr: str) -> dict[str, Any]:
        """The API answer for an instant query; raises on an invalid expression."""
        status, body = http(
            "GET", self.url + "/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        )
        answer: dict[str, Any] = json.loads(body)
        if status != 200 or answer.get("status") != "success":
            raise AssertionError(f"query failed ({status}): {expr}\n{answer.get('error')}")
        return answer

    def has_data(self, expr: str) -> bool:
        result = self.query(expr)["data"]
        if result["resultType"] == "vector":
            return len(result["result"]) > 0
        return result["result"] is not None

    def alerts(self) -> list[dict[str, Any]]:
        _status, body = http("GET", self.url + "/api/v1/alerts")
        alerts: list[dict[str, Any]] = json.loads(body)["data"]["alerts"]
        return alerts

    def alert_state(self, name: str) -> str | None:
        states = {a["state"] for a in self.alerts() if a["labels"].get("alertname") == name}
        if "firing" in states:
            return "firing"
        if "pending" in states:
            return "pending"
        return None

    def rule_expressions(self) -> list[tuple[str, str]]:
        _status, body = http("GET", self.url + "/api/v1/rules")
        out = []
        for group in json.loads(body)["data"]["groups"]:
            for rule in group["rules"]:
                out.append((rule["name"], rule["query"]))
        return out

    def rule_health(self) -> list[tuple[str, str, str]]:
        _status, body = http("GET", self.url + "/api/v1/rules")
        return [
            (r["name"], r["health"], r.get("lastError", ""))
            for g in json.loads(body)["data"]["groups"]
            for r in g["rules"]
        ]
