"""A real Prometheus scraping a real `ctafleet serve` under load.

Checks that every documented metric of the running processes has data, that every dashboard
query and every rule expression is valid PromQL (and returns data when it only reads the
application's own metrics), that stopping the API fires "API down" and bringing it back
resolves it, and that a burst of 5xx from a broken dependency fires the error-ratio alert.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from tests.conftest import service_unavailable
from tests.deploy.live import MONITORING, ROOT, ApiProcess, Prometheus, http, wait_for
from tests.kit.net import free_port

PASSWORD = "Live-Test-Password-42!"
RULES = sorted((MONITORING / "prometheus" / "rules").glob("*.yml"))
DASHBOARDS = sorted((MONITORING / "grafana" / "dashboards").glob("*.json"))
# Processes that exist today; their metrics must have data. Others are defined ahead.
RUNNING_PROCESSES = {"api"}
API_DOWN = "CTAFleetApiDown"
ERROR_RATIO = "CTAFleetHigh5xxRatio"


def documented_metrics() -> dict[str, set[str]]:
    """metric name -> processes, from the table in docs/observability.md."""
    out: dict[str, set[str]] = {}
    for line in (ROOT / "docs" / "observability.md").read_text().splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) < 6 or not cells[1].startswith("`"):
            continue
        processes = {p.strip() for p in cells[4].split(",")}
        for name in re.findall(r"`([a-z_:]+)`", cells[1]):
            out[name] = processes
    return out


def uses_only_app_metrics(expr: str) -> bool:
    names = set(re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?:\{|\[|\)|$|\s)", expr))
    metric_like = {n for n in names if "_" in n or ":" in n}
    metric_like -= {
        "sum_over_time",
        "histogram_quantile",
        "predict_linear",
        "label_replace",
        "count_over_time",
        "avg_over_time",
        "max_over_time",
        "min_over_time",
    }
    return bool(metric_like) and all(n.startswith(("ctafleet_", "ctafleet:")) for n in metric_like)


def app_metrics_with_data_expected(expr: str, documented: dict[str, set[str]]) -> bool:
    """True when every metric the expression reads comes from a process that is running."""
    if not uses_only_app_metrics(expr):
        return False
    for name in re.findall(r"\b(ctafleet_[a-z_]+)", expr):
        base = re.sub(r"_(bucket|count|sum|info)$", "", name)
        procs = documented.get(name) or documented.get(base) or set()
        if not procs & RUNNING_PROCESSES:
            return False
    return True


def panel_queries() -> list[tuple[str, str]]:
    out = []
    for path in DASHBOARDS:
        dash = json.loads(path.read_text())
        for panel in dash["panels"]:
            for target in panel["targets"]:
                out.append((f"{path.stem}: {panel['title']}", target["expr"]))
    return out


class Load:
    """Requests against the API in a background thread until stopped."""

    def __init__(self, api_url: str, token: str) -> None:
        self.api_url, self.token = api_url, token
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        auth = {"Authorization": f"Bearer {self.token}"}
        while not self._stop.is_set():
            for path in (
                "/api/v1/vehicles",
                "/api/v1/drivers",
                "/api/v1/tenant",
                "/api/v1/vehicles/00000000-0000-0000-0000-000000000000",
            ):
                with contextlib.suppress(OSError):
                    http("GET", self.api_url + path, headers=auth, timeout=2)
            time.sleep(0.05)

    def __enter__(self) -> Load:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self.thread.join(5)


@pytest.fixture(scope="module")
def prometheus_binary() -> str:
    binary = shutil.which("prometheus")
    if not binary:
        service_unavailable("prometheus is not installed: run scripts/install-monitoring-tools.sh")
    return binary


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiProcess]:
    api = ApiProcess(tmp_path_factory.mktemp("api"))
    api.cli("db", "upgrade")
    api.cli("tenants", "create", "live")
    api.cli(
        "users",
        "create",
        "--tenant",
        "live",
        "--email",
        "admin@live.example.org",
        "--role",
        "admin",
        stdin=PASSWORD + "\n",
    )
    api.start()
    yield api
    api.stop()


def login(api: ApiProcess, email: str = "admin@live.example.org") -> str:
    status, body = http(
        "POST", api.url + "/api/v1/auth/login", {"email": email, "password": PASSWORD}
    )
    assert status == 200, body
    return str(json.loads(body)["access_token"])


@pytest.mark.slow
def test_live_prometheus(
    prometheus_binary: str, api: ApiProcess, tmp_path_factory: pytest.TempPathFactory
) -> None:
    assert RULES, "no rule files in deploy/monitoring/prometheus/rules"
    # A second API whose database is a closed port: every database call fails, a real 5xx.
    broken = ApiProcess(
        tmp_path_factory.mktemp("broken"),
        env_extra={
            "CTAFLEET_DATABASE__URL": f"postgresql+asyncpg://nobody@127.0.0.1:{free_port()}/none",
        },
    )
    prom = Prometheus(
        tmp_path_factory.mktemp("prometheus"),
        {"ctafleet-api": [f"127.0.0.1:{api.port}", f"127.0.0.1:{broken.port}"]},
        RULES,
    )
    prom.start()
    try:
        token = login(api)
        for _ in range(3):  # failed logins feed ctafleet_auth_failures_total
            http(
                "POST",
                api.url + "/api/v1/auth/login",
                {"email": "admin@live.example.org", "password": "wrong-password-123"},
            )
        with Load(api.url, token):
            wait_for(
                lambda: prom.has_data('ctafleet_http_requests_total{route="/api/v1/vehicles"}'),
                30,
                "request metrics scraped",
            )
            time.sleep(4)  # several scrapes, so rate() over the windows has two samples

            documented = documented_metrics()
            missing = []
            for name, processes in documented.items():
                if not processes & RUNNING_PROCESSES:
                    continue
                selector = f'{{__name__=~"{name}(_total|_bucket|_info)?"}}'
                if not prom.has_data(selector):
                    missing.append(name)
            assert not missing, f"documented metrics without data: {missing}"

            bad, empty = [], []
            for where, expr in panel_queries():
                try:
                    has = prom.has_data(expr)
                except AssertionError as exc:
                    bad.append(f"{where}: {exc}")
                    continue
                if not has and app_metrics_with_data_expected(expr, documented):
                    empty.append(f"{where}: {expr}")
            assert not bad, "invalid panel queries:\n" + "\n".join(bad)
            assert not empty, "panel queries on the app's metrics without data:\n" + "\n".join(
                empty
            )

            wait_for(
                lambda: all(h == "ok" for _, h, _ in prom.rule_health()),
                20,
                "every rule evaluated without error",
            )
            empty = []
            for name, expr in prom.rule_expressions():
                prom.query(expr)  # valid PromQL, or AssertionError naming it
                if (
                    name.startswith("ctafleet:")
                    and app_metrics_with_data_expected(expr, documented)
                    and not prom.has_data(expr)
                ):
                    empty.append(f"{name}: {expr}")
            assert not empty, "recording rules on the app's metrics without data:\n" + "\n".join(
                empty
            )
            assert prom.alert_state(API_DOWN) is None

        # API down: stop it, the alert goes pending then firing; restart, it resolves.
        api.stop()
        wait_for(lambda: prom.alert_state(API_DOWN) == "pending", 20, f"{API_DOWN} pending")
        wait_for(lambda: prom.alert_state(API_DOWN) == "firing", 20, f"{API_DOWN} firing")
        api.start()
        wait_for(lambda: prom.alert_state(API_DOWN) is None, 30, f"{API_DOWN} resolved")

        # A burst of 5xx from the API with the broken database fires the error-ratio alert.
        broken.start()
        assert prom.alert_state(ERROR_RATIO) is None
        stop = threading.Event()

        def burst() -> None:
            while not stop.is_set():
                http(
                    "POST",
                    broken.url + "/api/v1/auth/login",
                    {"email": "admin@live.example.org", "password": PASSWORD},
                    timeout=5,
                )

        threads = [threading.Thread(target=burst, daemon=True) for _ in range(4)]
        for t in threads:
            t.start()
        try:
            status, _ = http(
                "POST",
                broken.url + "/api/v1/auth/login",
                {"email": "admin@live.example.org", "password": PASSWORD},
            )
            assert status == 500, "the broken dependency should give a server error"
            wait_for(lambda: prom.alert_state(ERROR_RATIO) == "firing", 60, f"{ERROR_RATIO} firing")
        finally:
            stop.set()
            for t in threads:
                t.join(10)
    finally:
        broken.stop()
        prom.stop()


def test_metric_table_parses() -> None:
    """Guards the docs table the live test depends on."""
    documented = documented_metrics()
    assert "ctafleet_http_requests_total" in documented
    assert documented["ctafleet_http_requests_total"] == {"api"}
    assert all(procs for procs in documented.values())


def test_dashboards_are_generated() -> None:
    """The committed dashboards are exactly what the generator writes."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "grafana_generate", MONITORING / "grafana" / "generate.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module through sys.modules
    spec.loader.exec_module(module)
    for dashboard in module.DASHBOARDS:
        path = (
            MONITORING
            / "grafana"
            / "dashboards"
            / f"{dashboard.uid.removeprefix('ctafleet-')}.json"
        )
        assert path.exists(), f"{path} missing: run deploy/monitoring/grafana/generate.py"
        expected = json.dumps(module.render(dashboard), indent=2, sort_keys=True) + "\n"
        assert path.read_text() == expected, f"{path} is stale: run the generator"
        for panel in module.render(dashboard)["panels"]:
            assert panel["title"], f"{path}: untitled panel"
            assert panel["description"], f"{path}: {panel['title']} has no description"
    assert len(DASHBOARDS) == len(module.DASHBOARDS)
