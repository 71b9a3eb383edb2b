"""docs/kubernetes.md: every shell block is marked; the offline ones run here exactly as
written (one bash session, in the repository), the cluster ones name only files that exist
and the label selector the migration test checks."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

from tests.kit.k8s import POD_KINDS, ROOT, pod_spec
from tests.kit.tools import tool

DOC = ROOT / "docs" / "kubernetes.md"
BLOCK = re.compile(r"(?:<!-- step: (\w+) -->\n)?```sh\n(.*?)```", re.S)
SELECTOR = "-l 'app.kubernetes.io/component in (config,migrate)'"


def steps() -> list[tuple[str, str]]:
    return [(mark or "", body) for mark, body in BLOCK.findall(DOC.read_text())]


def test_every_shell_block_is_offline_or_cluster() -> None:
    found = steps()
    assert [m for m, _ in found if m not in ("offline", "cluster")] == []
    assert {m for m, _ in found} == {"offline", "cluster"}


def test_offline_steps_run_as_written(tmp_path: Path) -> None:
    script = "\n".join(body for mark, body in steps() if mark == "offline")
    checkers = Path(tool("kubernetes-validate")).parent
    path = [str(Path(sys.executable).parent), str(checkers), os.environ["PATH"]]
    env = {
        **os.environ,
        "PATH": os.pathsep.join(path),
        "OUT": str(tmp_path),
        "APP_DIGEST": "sha256:" + "a" * 64,
        "EDGE_DIGEST": "sha256:" + "b" * 64,
    }
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    kinds = {d["kind"] for d in yaml.safe_load_all((tmp_path / "production.yaml").read_text()) if d}
    assert {"Deployment", "Ingress", "NetworkPolicy"} <= kinds
    secret = yaml.safe_load((tmp_path / "secret.yaml").read_text())
    assert secret["kind"] == "Secret"
    assert secret["metadata"]["name"] == "ctafleet-secrets"
    release = [d for d in yaml.safe_load_all((tmp_path / "release.yaml").read_text()) if d]
    images = {
        c["image"]
        for d in release
        if d["kind"] in POD_KINDS
        for c in pod_spec(d).get("initContainers", []) + pod_spec(d)["containers"]
        if "ctafleet.azurecr.io" in c["image"]
    }
    assert images == {
        f"ctafleet.azurecr.io/ctafleet/app@sha256:{'a' * 64}",
        f"ctafleet.azurecr.io/ctafleet/edge@sha256:{'b' * 64}",
    }


def test_cluster_steps_name_real_files_and_the_tested_selector() -> None:
    cluster = "\n".join(body for mark, body in steps() if mark == "cluster")
    for path in re.findall(r"\b(deploy/k8s/[\w./-]+)", cluster):
        assert (ROOT / path).exists(), path
    assert SELECTOR in cluster
    # The migration waits before the full apply, in this order.
    order = [cluster.index(s) for s in ("delete job", SELECTOR, "wait --for=condition=complete")]
    assert order == sorted(order)
