"""Prometheus configuration, alert and recording rules, Alertmanager routing, and runbooks.

The promtool and amtool checks run the real tools (scripts/install-monitoring-tools.sh installs
them); without them they skip, and CTAFLEET_REQUIRE_SERVICES=1 turns the skip into a failure.
The other tests read the files and need nothing but Python: every alert carries a severity,
a summary, a description and a runbook link that resolves to a heading, and every alert is
made to fire and made to stay silent by a promtool unit test.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from ctafleet.observability import metrics
from ctafleet.ops import metrics as ops_metrics
from ctafleet.ops.certs import metrics as certs_metrics
from tests.conftest import service_unavailable
from tests.kit.net import free_port

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "deploy" / "monitoring"
PROMETHEUS_DIR = MONITORING / "prometheus"
PROMETHEUS_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
KUBERNETES_CONFIG = PROMETHEUS_DIR / "prometheus-kubernetes.yml"
RULE_FILES = sorted((PROMETHEUS_DIR / "rules").glob("*.yml"))
TEST_FILES = sorted((PROMETHEUS_DIR / "tests").glob("*.yml"))
ALERTMANAGER_CONFIG = MONITORING / "alertmanager" / "alertmanager.yml"
BLACKBOX_CONFIG = MONITORING / "blackbox" / "blackbox.yml"
RUNBOOKS = ROOT / "docs" / "runbooks"

SEVERITIES = {"critical", "warning", "info"}
RECEIVER_BY_SEVERITY = {"critical": "pager", "warning": "team-chat", "info": "null"}
CTAFLEET_JOBS = {"ctafleet-api", "ctafleet-worker", "ctafleet-mqtt", "ctafleet-qa"}
INSTALL_HINT = "scripts/install-monitoring-tools.sh installs it"


# --- helpers -------------------------------------------------------------------------------------


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def alert_rules() -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = []
    for path in RULE_FILES:
        for group in load_yaml(path)["groups"]:
            rules.extend(r | {"_file": path.name} for r in group["rules"] if "alert" in r)
    return rules


def recording_rules() -> list[dict[str, Any]]:
    return [
        rule
        for path in RULE_FILES
        for group in load_yaml(path)["groups"]
        for rule in group["rules"]
        if "record" in rule
    ]


def rule_id(rule: dict[str, Any]) -> str:
    extra = ",".join(f"{k}={v}" for k, v in sorted(rule["labels"].items()) if k != "service")
    return f"{rule['alert']}[{extra}]"


ALERT_RULES = alert_rules()
ALERT_NAMES = sorted({r["alert"] for r in ALERT_RULES})


def alert_expectations() -> Iterator[tuple[str, str, list[dict[str, Any]]]]:
    """(test file, alertname, exp_alerts) for every alert_rule_test of every promtool test."""
    for path in TEST_FILES:
        for group in load_yaml(path)["tests"]:
            for case in group.get("alert_rule_test", []):
                yield path.name, case["alertname"], case.get("exp_alerts") or []


def github_anchor(heading: str) -> str:
    """The anchor GitHub generates for a Markdown heading."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def markdown_sections(path: Path) -> dict[str, str]:
    """Heading anchor -> the text up to the next heading of the same or a higher level."""
    sections: dict[str, str] = {}
    current: str | None = None
    in_code = False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        match = None if in_code else re.match(r"^(#{1,6})\s+(.*)$", line)
        if match:
            current = github_anchor(match.group(2))
            sections[current] = ""
        elif current is not None:
            sections[current] += line + "\n"
    return sections


def tool(*names: str) -> str:
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    service_unavailable(f"{names[0]} is not installed ({INSTALL_HINT})")
    raise AssertionError("unreachable")


def run(*cmd: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def assert_ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, f"{' '.join(result.args)}\n{result.stdout}\n{result.stderr}"


def exposed_metric_names() -> set[str]:
    """Every series name the long-running processes' registry can produce."""
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_count", "_sum", "_created"),
        "summary": ("_count", "_sum", "_created"),
        "info": ("_info",),
        "gauge": ("",),
    }
    names: set[str] = set()
    for family in metrics.REGISTRY.collect():
        names.update(family.name + s for s in suffixes.get(family.type, ("",)))
    return names


# --- Prometheus configuration --------------------------------------------------------------------


def test_rule_and_test_files_exist() -> None:
    names = {p.name for p in RULE_FILES}
    assert {"recording.yml", "alerts-app.yml", "alerts-infra.yml"} <= names
    assert TEST_FILES, "no promtool unit tests in deploy/monitoring/prometheus/tests"
    assert len(ALERT_RULES) >= 40


def test_promtool_check_config() -> None:
    promtool = tool("promtool")
    result = run(promtool, "check", "config", str(PROMETHEUS_CONFIG))
    assert_ok(result)
    # The rule_files glob must find every rule file (an empty glob is not an error to promtool).
    assert f"{len(RULE_FILES)} rule files found" in result.stdout + result.stderr


def test_promtool_check_kubernetes_config(tmp_path: Path) -> None:
    """Syntax only: the service-account files it names exist only inside a pod.

    Builds without Kubernetes discovery (Debian's) reject kubernetes_sd_configs outright; they
    check the rest of the file, and test_kubernetes_relabelling covers the discovery part.
    """
    promtool = tool("promtool")
    result = run(promtool, "check", "config", "--syntax-only", str(KUBERNETES_CONFIG))
    if "field kubernetes_sd_configs not found" in result.stdout + result.stderr:
        config = load_yaml(KUBERNETES_CONFIG)
        for scrape in config["scrape_configs"]:
            scrape.pop("kubernetes_sd_configs", None)
        stripped = tmp_path / "prometheus-kubernetes.yml"
        stripped.write_text(yaml.safe_dump(config))
        result = run(promtool, "check", "config", "--syntax-only", str(stripped))
    assert_ok(result)


def test_static_config_scrapes_everything() -> None:
    config = load_yaml(PROMETHEUS_CONFIG)
    assert config["rule_files"] == ["rules/*.yml"]
    assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    jobs = {s["job_name"]: s for s in config["scrape_configs"]}
    assert CTAFLEET_JOBS | {"node-exporter", "postgres-exporter", "redis-exporter"} <= set(jobs)
    for name in CTAFLEET_JOBS:
        assert jobs[name]["static_configs"][0]["targets"], name
    probe = jobs["blackbox-http"]
    assert probe["params"]["module"] == ["http_2xx"]
    targets = probe["static_configs"][0]["targets"]
    assert any(t.startswith("https://") and t.endswith("/healthz") for t in targets)
    assert any(t.startswith("https://") and t.endswith("/readyz") for t in targets)


def test_kubernetes_config_matches_static_config() -> None:
    static, kube = load_yaml(PROMETHEUS_CONFIG), load_yaml(KUBERNETES_CONFIG)
    for key in ("global", "rule_files", "alerting"):
        assert kube[key] == static[key], key
    jobs = {s["job_name"]: s for s in kube["scrape_configs"]}
    assert CTAFLEET_JOBS | {"kubernetes-exporters", "node-exporter", "kubelet", "cadvisor"} <= set(
        jobs
    )
    for name in CTAFLEET_JOBS:
        assert jobs[name]["kubernetes_sd_configs"] == [{"role": "pod"}], name
    assert (
        jobs["blackbox-http"]
        == {s["job_name"]: s for s in static["scrape_configs"]}["blackbox-http"]
    )


def relabel(labels: dict[str, str], configs: list[dict[str, Any]]) -> dict[str, str] | None:
    """Prometheus relabelling (replace, keep, drop), enough for the rules in these files."""
    out = dict(labels)
    for cfg in configs:
        value = cfg.get("separator", ";").join(out.get(s, "") for s in cfg.get("source_labels", []))
        match = re.fullmatch(cfg.get("regex", "(.*)"), value)
        action = cfg.get("action", "replace")
        if action == "keep" and not match:
            return None
        if action == "drop" and match:
            return None
        if action == "replace" and match:
            template = cfg.get("replacement", "$1")
            groups = (match.group(0), *match.groups())

            def group(m: re.Match[str], g: tuple[str | Any, ...] = groups) -> str:
                return str(g[int(m.group(1))] or "")

            result = re.sub(r"\$(\d+)", group, template)
            out[cfg["target_label"]] = result
    return out


def pod_target(component: str, **extra: str) -> dict[str, str]:
    return {
        "__address__": "10.1.2.3:8000",
        "__metrics_path__": "/metrics",
        "__meta_kubernetes_namespace": "ctafleet",
        "__meta_kubernetes_pod_name": f"ctafleet-{component}-abc12",
        "__meta_kubernetes_pod_phase": "Running",
        "__meta_kubernetes_pod_label_app_kubernetes_io_name": "ctafleet",
        "__meta_kubernetes_pod_label_app_kubernetes_io_component": component,
        "__meta_kubernetes_pod_annotation_prometheus_io_scrape": "true",
        "__meta_kubernetes_pod_annotation_prometheus_io_port": "9101",
    } | extra


@pytest.mark.parametrize(
    ("component", "job"),
    [
        ("api", "ctafleet-api"),
        ("worker", "ctafleet-worker"),
        ("mqtt", "ctafleet-mqtt"),
        ("qa-runner", "ctafleet-qa"),
        ("qa-indexer", "ctafleet-qa"),
    ],
)
def test_kubernetes_relabelling(component: str, job: str) -> None:
    """A pod is scraped by exactly the job of its component, on its annotated port and path."""
    scrapes = load_yaml(KUBERNETES_CONFIG)["scrape_configs"]
    pod_jobs = [s for s in scrapes if s.get("kubernetes_sd_configs") == [{"role": "pod"}]]
    pod = pod_target(component, __meta_kubernetes_pod_annotation_prometheus_io_path="/m")
    kept = {
        s["job_name"]: relabel(pod | {"job": s["job_name"]}, s["relabel_configs"]) for s in pod_jobs
    }
    scraped = {name: labels for name, labels in kept.items() if labels is not None}
    assert list(scraped) == [job]
    labels = scraped[job]
    assert labels["job"] == job
    assert labels["__address__"] == "10.1.2.3:9101"
    assert labels["__metrics_path__"] == "/m"
    assert labels["namespace"] == "ctafleet"
    assert labels["pod"] == f"ctafleet-{component}-abc12"
    # Not opted in, finished, or another application's pod: not scraped by any job.
    for excluded in (
        pod_target(component, __meta_kubernetes_pod_annotation_prometheus_io_scrape="false"),
        pod_target(component, __meta_kubernetes_pod_phase="Succeeded"),
        pod_target(component, __meta_kubernetes_pod_label_app_kubernetes_io_name="other"),
    ):
        for scrape in pod_jobs:
            assert (
                relabel(excluded | {"job": scrape["job_name"]}, scrape["relabel_configs"]) is None
            )


def test_blackbox_modules() -> None:
    modules = load_yaml(BLACKBOX_CONFIG)["modules"]
    assert modules["http_2xx"]["prober"] == "http"
    assert modules["http_2xx"]["http"]["fail_if_not_ssl"] is True
    assert modules["tcp_connect"]["prober"] == "tcp"


def test_blackbox_config_check() -> None:
    binary = shutil.which("prometheus-blackbox-exporter") or shutil.which("blackbox_exporter")
    if not binary:
        service_unavailable(
            "blackbox exporter not installed: run scripts/install-monitoring-tools.sh"
        )
    assert_ok(run(binary, "--config.check", f"--config.file={BLACKBOX_CONFIG}"))


# --- rules and their unit tests ------------------------------------------------------------------


def test_promtool_check_rules() -> None:
    promtool = tool("promtool")
    assert_ok(run(promtool, "check", "rules", *map(str, RULE_FILES)))


@pytest.mark.parametrize("test_file", TEST_FILES, ids=lambda p: p.name)
def test_promtool_unit_tests(test_file: Path) -> None:
    promtool = tool("promtool")
    assert_ok(run(promtool, "test", "rules", str(test_file)))


@pytest.mark.parametrize("rule", ALERT_RULES, ids=rule_id)
def test_alert_is_labelled_and_annotated(rule: dict[str, Any]) -> None:
    labels, annotations = rule.get("labels", {}), rule.get("annotations", {})
    assert labels.get("severity") in SEVERITIES
    assert labels.get("service"), "a service label lets Alertmanager group and inhibit"
    assert labels.get("service_down", "true") == "true"
    for key in ("summary", "description", "runbook_url"):
        assert str(annotations.get(key, "")).strip(), f"annotation {key} missing"
    assert rule["alert"].startswith("CTAFleet")


@pytest.mark.parametrize("rule", ALERT_RULES, ids=rule_id)
def test_runbook_url_resolves_to_the_alerts_heading(rule: dict[str, Any]) -> None:
    url = rule["annotations"]["runbook_url"]
    match = re.fullmatch(r"docs/runbooks/([a-z0-9-]+\.md)#([a-z0-9-]+)", url)
    assert match, f"runbook_url {url!r} is not docs/runbooks/<file>.md#<anchor>"
    path = RUNBOOKS / match.group(1)
    assert path.is_file(), f"{path} does not exist"
    assert match.group(2) == github_anchor(rule["alert"]), "link to the alert's own section"
    assert match.group(2) in markdown_sections(path), f"no heading for #{match.group(2)} in {path}"


def test_alert_rules_are_distinct() -> None:
    """Rules sharing a name differ in their labels (warning/critical variants, windows)."""
    seen = [(r["alert"], tuple(sorted(r["labels"].items()))) for r in ALERT_RULES]
    assert len(seen) == len(set(seen))


@pytest.mark.parametrize("rule", ALERT_RULES, ids=rule_id)
def test_alert_rule_fires_in_a_unit_test(rule: dict[str, Any]) -> None:
    """Some promtool test expects this very rule (all its static labels) to fire."""
    wanted = {k: str(v) for k, v in rule["labels"].items()}
    for _file, name, exp_alerts in alert_expectations():
        if name == rule["alert"] and any(
            wanted.items() <= {k: str(v) for k, v in e.get("exp_labels", {}).items()}.items()
            for e in exp_alerts
        ):
            return
    pytest.fail(f"no promtool test expects {rule_id(rule)} to fire")


@pytest.mark.parametrize("name", ALERT_NAMES)
def test_alert_stays_silent_in_a_unit_test(name: str) -> None:
    """Some promtool test has a near miss where this alert must not fire."""
    assert any(n == name and not exp for _f, n, exp in alert_expectations()), (
        f"no promtool test expects {name} to stay silent (exp_alerts: [])"
    )


def test_unit_tests_name_only_existing_alerts() -> None:
    unknown = {n for _f, n, _e in alert_expectations()} - set(ALERT_NAMES)
    assert not unknown, f"promtool tests of alerts that do not exist: {unknown}"


def test_recording_rules_are_tested() -> None:
    exprs = " ".join(
        case["expr"]
        for path in TEST_FILES
        for group in load_yaml(path)["tests"]
        for case in group.get("promql_expr_test", [])
    )
    untested = [r["record"] for r in recording_rules() if r["record"] not in exprs]
    assert not untested, f"recording rules without a promql_expr_test: {untested}"


def command_metric_names() -> dict[str, set[str]]:
    """Process (as docs/observability.md names it) -> the series its command publishes."""
    return {
        "backup": {d.name for d in ops_metrics.BACKUP_METRICS},
        "dr": {d.name for d in ops_metrics.DRILL_METRICS},
        "certs": {d.name for d in certs_metrics.CERTS_METRICS},
    }


def documented_metrics() -> dict[str, set[str]]:
    """Metric name -> the processes docs/observability.md says produce it."""
    out: dict[str, set[str]] = {}
    for line in (ROOT / "docs" / "observability.md").read_text().splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) < 6 or not cells[1].startswith("`"):
            continue
        for name in re.findall(r"`([a-z_:]+)`", cells[1]):
            out[name] = {p.strip() for p in cells[4].split(",")}
    return out


def test_rules_read_only_metrics_that_are_published() -> None:
    exprs = [r["expr"] for r in ALERT_RULES + recording_rules()]
    used = {name for expr in exprs for name in re.findall(r"\bctafleet_[a-z0-9_]+", expr)}
    published = exposed_metric_names().union(*command_metric_names().values())
    missing = sorted(used - published)
    assert not missing, (
        f"rules read metrics neither ctafleet.observability.metrics nor ctafleet.ops.metrics "
        f"defines: {missing}"
    )


def test_each_documented_metric_comes_from_the_process_the_docs_name() -> None:
    """The backup and drill commands publish their own metrics; the api/worker registry must
    not carry them (at 0 there they would keep CTAFleetBackupMetricsMissing from firing)."""
    commands = command_metric_names()
    registry = exposed_metric_names()
    documented = documented_metrics()
    assert documented, "no metric table in docs/observability.md"
    for name, processes in documented.items():
        if processes <= set(commands):
            assert all(name in commands[p] for p in processes), (name, processes)
            assert name not in registry, f"{name} is exposed by the long-running processes"
        else:
            assert not processes & set(commands), (name, processes)
            names = {name, name + "_total", name + "_bucket"}
            assert names & registry, f"{name} ({processes}) is not in the registry"
    for process, names in commands.items():
        undocumented = {n for n in names if process not in documented.get(n, set())}
        assert not undocumented, f"{process} metrics missing from the docs: {undocumented}"


# --- Alertmanager --------------------------------------------------------------------------------


def test_amtool_check_config() -> None:
    amtool = tool("amtool")
    assert_ok(run(amtool, "check-config", str(ALERTMANAGER_CONFIG)))


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        ({"severity": "critical"}, "pager"),
        ({"severity": "warning"}, "team-chat"),
        ({"severity": "info"}, "null"),
        ({"alertname": "WithoutSeverity"}, "team-chat"),
        ({"alertname": "CTAFleetApiDown", "severity": "critical", "service": "api"}, "pager"),
        (
            {"alertname": "CTAFleetJobFailures", "severity": "warning", "service": "worker"},
            "team-chat",
        ),
        (
            {"alertname": "CTAFleetPostgreSQLRestarted", "severity": "info", "service": "postgres"},
            "null",
        ),
    ],
    ids=lambda v: ",".join(f"{k}={x}" for k, x in v.items()) if isinstance(v, dict) else v,
)
def test_alertmanager_routes(labels: dict[str, str], receiver: str) -> None:
    amtool = tool("amtool")
    result = run(
        amtool,
        "config",
        "routes",
        "test",
        f"--config.file={ALERTMANAGER_CONFIG}",
        *(f"{k}={v}" for k, v in labels.items()),
    )
    assert_ok(result)
    assert result.stdout.strip() == receiver


def test_every_severity_has_a_route() -> None:
    config = load_yaml(ALERTMANAGER_CONFIG)
    receivers = {r["name"] for r in config["receivers"]}
    assert set(RECEIVER_BY_SEVERITY.values()) <= receivers
    assert {r["labels"]["severity"] for r in ALERT_RULES} <= set(RECEIVER_BY_SEVERITY)
    assert config["route"]["group_by"] == ["alertname", "service"]
    # Secrets are read from files, never written into the configuration.
    for receiver in config["receivers"]:
        for slack in receiver.get("slack_configs", []):
            assert "api_url" not in slack
            assert slack["api_url_file"].startswith("/")


def http_json(method: str, url: str, body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        raw = response.read()
    return json.loads(raw) if raw else None


def local_alertmanager_config(tmp_path: Path) -> Path:
    """The real configuration with every receiver pointed at a closed loopback port."""
    config = load_yaml(ALERTMANAGER_CONFIG)
    nowhere = "http://127.0.0.1:9/"
    url_file = tmp_path / "url"
    url_file.write_text(nowhere)
    for receiver in config["receivers"]:
        for webhook in receiver.get("webhook_configs", []):
            webhook["url"] = nowhere
        for slack in receiver.get("slack_configs", []):
            slack["api_url_file"] = str(url_file)
    path = tmp_path / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_alertmanager_inhibits_symptoms_of_a_service_that_is_down(tmp_path: Path) -> None:
    """A real Alertmanager on loopback, fed alerts through its API."""
    binary = tool("prometheus-alertmanager", "alertmanager")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = (tmp_path / "alertmanager.log").open("w")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={local_alertmanager_config(tmp_path)}",
            f"--storage.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(f"{base}/-/ready", timeout=1).close()
                break
            except (OSError, urllib.error.URLError):
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(
                        "Alertmanager did not start:\n"
                        + (tmp_path / "alertmanager.log").read_text()
                    )
                time.sleep(0.1)

        def alert(name: str, severity: str, **labels: str) -> dict[str, Any]:
            return {
                "labels": {"alertname": name, "severity": severity} | labels,
                "annotations": {"summary": name},
                "startsAt": dt.datetime.now(dt.UTC).isoformat(),
            }

        http_json(
            "POST",
            f"{base}/api/v2/alerts",
            [
                alert("CTAFleetApiDown", "critical", service="api", service_down="true"),
                alert("CTAFleetHigh5xxRatio", "warning", service="api"),
                alert(
                    "CTAFleetAvailabilityErrorBudgetBurn",
                    "critical",
                    service="api",
                    slo="availability",
                    long_window="1h",
                ),
                alert("CTAFleetRedisMemoryHigh", "warning", service="redis"),
                alert(
                    "CTAFleetTLSCertificateExpiring", "critical", service="tls", host="a.example"
                ),
                alert("CTAFleetTLSCertificateExpiring", "warning", service="tls", host="a.example"),
                alert("CTAFleetTLSCertificateExpiring", "warning", service="tls", host="b.example"),
            ],
        )
        expected = {
            ("CTAFleetApiDown", "critical", ""): False,
            ("CTAFleetHigh5xxRatio", "warning", ""): True,
            ("CTAFleetAvailabilityErrorBudgetBurn", "critical", ""): True,
            ("CTAFleetRedisMemoryHigh", "warning", ""): False,
            ("CTAFleetTLSCertificateExpiring", "critical", "a.example"): False,
            ("CTAFleetTLSCertificateExpiring", "warning", "a.example"): True,
            ("CTAFleetTLSCertificateExpiring", "warning", "b.example"): False,
        }
        got: dict[tuple[str, str, str], bool] = {}
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            got = {
                (
                    a["labels"]["alertname"],
                    a["labels"]["severity"],
                    a["labels"].get("host", ""),
                ): bool(a["status"]["inhibitedBy"])
                for a in http_json("GET", f"{base}/api/v2/alerts")
            }
            if got == expected:
                break
            time.sleep(0.2)
        assert got == expected
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


# --- runbooks ------------------------------------------------------------------------------------


def runbook_files() -> list[Path]:
    return sorted(p for p in RUNBOOKS.glob("*.md") if p.name != "README.md")


@pytest.mark.parametrize("name", ALERT_NAMES)
def test_runbook_section_says_what_to_check_first(name: str) -> None:
    url = next(r["annotations"]["runbook_url"] for r in ALERT_RULES if r["alert"] == name)
    path, anchor = url.split("#")
    section = markdown_sections(ROOT / path)[anchor]
    assert "**What it means:**" in section
    assert "**Impact:**" in section
    assert "First three things to check" in section
    steps = re.findall(r"^(\d+)\. ", section.split("First three things to check", 1)[1], re.M)
    assert steps[:3] == ["1", "2", "3"], f"{name}: numbered list of three checks expected"


def test_every_runbook_heading_is_an_alert() -> None:
    for path in runbook_files():
        headings = re.findall(r"^## (\S+)\s*$", path.read_text(), re.M)
        assert headings, path
        assert set(headings) <= set(ALERT_NAMES), f"{path.name}: sections of unknown alerts"


def test_runbook_index_lists_every_alert_and_file() -> None:
    index = (RUNBOOKS / "README.md").read_text()
    for name in ALERT_NAMES:
        assert f"| {name} |" in index, f"{name} missing from docs/runbooks/README.md"
    for path in runbook_files():
        assert f"]({path.name}#" in index, f"{path.name} not linked from the index"
    for link in re.findall(r"\]\(([a-z0-9-]+\.md)#([a-z0-9-]+)\)", index):
        assert link[1] in markdown_sections(RUNBOOKS / link[0]), f"dead link {link}"
