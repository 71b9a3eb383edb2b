"""What the manifests take from elsewhere stays generated: the ConfigMap's env file and the
Secret's template from the settings model, the PrometheusRules from the rules promtool tests;
and the deployment steps of docs/kubernetes.md that run without a cluster."""

from __future__ import annotations

import re
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ctafleet.config_docs import (
    K8S_SECRET_TEMPLATE,
    K8S_SETTINGS_ENV,
    KUBERNETES_REQUIRED_SECRETS,
    iter_fields,
    render_k8s_secret_template,
    render_k8s_settings_env,
)
from tests.deploy.k8s.checks import matches, parse_cli
from tests.kit.k8s import (
    K8S,
    OVERLAYS,
    ROOT,
    one,
    pod_spec,
    render,
    secret_from_template,
    select,
    template_keys,
)

RULES = ROOT / "deploy" / "monitoring" / "prometheus" / "rules"
GENERATOR = K8S / "generate-prometheusrules.py"
FIX = "run `ctafleet config docs` and commit the result"


def test_settings_env_and_secret_template_are_generated_from_the_model() -> None:
    assert (ROOT / K8S_SETTINGS_ENV).read_text() == render_k8s_settings_env(), FIX
    assert (ROOT / K8S_SECRET_TEMPLATE).read_text() == render_k8s_secret_template(), FIX


def test_configmap_holds_no_secret_and_the_template_every_secret() -> None:
    secret_vars = {v for _, v, f, _ in iter_fields() if "Secret" in str(f.annotation)}
    required, optional = template_keys()
    assert secret_vars <= set(required + optional)
    assert set(required) == set(KUBERNETES_REQUIRED_SECRETS)
    for overlay in OVERLAYS:
        data = one(render(overlay), "ConfigMap", prefix="ctafleet-config")["data"]
        assert not set(data) & set(required + optional), overlay
        assert not [v for v in data.values() if re.search(r"://[^/@\s]+:[^/@\s]+@", v)]


def test_the_documented_secret_step_builds_the_secret_the_pods_read(tmp_path: Path) -> None:
    required, _ = template_keys()
    values = {k: secrets.token_urlsafe(24) for k in required}
    secret = secret_from_template(values, tmp_path)
    assert secret["kind"] == "Secret"
    assert secret["metadata"]["name"] == "ctafleet-secrets"
    assert set(secret["data"]) == set(required)
    refs = {
        v["secret"]["secretName"]
        for d in render("production")
        if d["kind"] in ("Deployment", "Job")
        for v in pod_spec(d).get("volumes", [])
        if "secret" in v
    }
    assert refs == {"ctafleet-secrets"}
    with pytest.raises(ValueError, match="missing"):
        secret_from_template({**values, required[0]: ""}, tmp_path)
    with pytest.raises(ValueError, match="CTAFLEET_NOPE"):
        secret_from_template({**values, "CTAFLEET_NOPE": "x"}, tmp_path)


def _generate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(GENERATOR), "--check", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_prometheus_rules_are_generated_from_the_promtool_tested_rules(tmp_path: Path) -> None:
    result = _generate()
    assert result.returncode == 0, result.stdout + result.stderr
    # A rules change not carried over is caught.
    changed = tmp_path / "rules"
    shutil.copytree(RULES, changed)
    app = changed / "alerts-app.yml"
    app.write_text(app.read_text().replace("for: 2m", "for: 3m", 1))
    stale = _generate("--rules", str(changed))
    assert stale.returncode == 1
    assert "-      for: 2m" in stale.stdout
    assert "+      for: 3m" in stale.stdout


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rendered_rules_and_monitors_give_the_rules_their_jobs(overlay: str) -> None:
    docs = render(overlay)
    rendered = {d["metadata"]["name"]: d["spec"]["groups"] for d in select(docs, "PrometheusRule")}
    expected = {
        f"ctafleet-{p.stem}": yaml.safe_load(p.read_text())["groups"] for p in RULES.glob("*.yml")
    }
    assert rendered == expected
    # Every job="ctafleet-..." the rules ask for is a job label some monitor sets.
    wanted = set(
        re.findall(r'job="(ctafleet-[a-z]+)"', "".join(p.read_text() for p in RULES.glob("*.yml")))
    )
    produced = {
        r["replacement"]
        for d in select(docs, "ServiceMonitor") + select(docs, "PodMonitor")
        for ep in d["spec"].get("endpoints", d["spec"].get("podMetricsEndpoints", []))
        for r in ep.get("relabelings", [])
        if r.get("targetLabel") == "job"
    }
    assert wanted <= produced, wanted - produced


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_migration_step_selects_only_the_config_and_the_job(overlay: str) -> None:
    """docs/kubernetes.md: `kubectl apply -k ... -l 'app.kubernetes.io/component in (config,
    migrate)'` first. The same selector, applied to the render, must pick exactly the
    ConfigMap the Job reads and the Job, and the Job must run `ctafleet db upgrade`."""
    docs = render(overlay)
    selector = {
        "matchExpressions": [
            {
                "key": "app.kubernetes.io/component",
                "operator": "In",
                "values": ["config", "migrate"],
            }
        ]
    }
    chosen = [d for d in docs if matches(selector, d["metadata"].get("labels", {}))]
    assert sorted(d["kind"] for d in chosen) == ["ConfigMap", "Job"]
    job = one(chosen, "Job")
    config = one(chosen, "ConfigMap")
    (container,) = pod_spec(job)["containers"]
    assert parse_cli(container["args"])[0] == "db upgrade"
    assert {"configMapRef": {"name": config["metadata"]["name"]}} in container["envFrom"]
    # Never in a start-up: no long-running pod migrates.
    for doc in select(docs, "Deployment") + select(docs, "StatefulSet"):
        spec = pod_spec(doc)
        for c in spec.get("initContainers", []) + spec["containers"]:
            assert "upgrade" not in (c.get("args", []) + c.get("command", [])), doc["metadata"][
                "name"
            ]
