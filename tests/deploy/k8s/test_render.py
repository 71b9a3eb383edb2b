"""Every overlay renders with `kubectl kustomize`; the built-in objects pass
kubernetes-validate --strict for each Kubernetes version we support; the custom resources
pass the operators' published schemas (deploy/k8s/schemas); checkov finds no failed check.
Each tool also gets a deliberately broken object in the same run and must refuse it, so a
tool that checks nothing cannot pass."""

from __future__ import annotations

import copy
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
import referencing
import referencing.jsonschema
import yaml

from tests.kit.k8s import K8S, OVERLAYS, Doc, one, render, render_text
from tests.kit.tools import tool

# The Kubernetes minor versions the manifests support (AKS's window at the time of writing).
K8S_VERSIONS = ("1.30.0", "1.31.0", "1.32.0", "1.33.0")
SCHEMAS = K8S / "schemas"
# Custom resources no published schema could be had for (deploy/k8s/schemas/README.md).
WITHOUT_SCHEMA = {
    ("postgresql.cnpg.io/v1", "Cluster"),
    ("postgresql.cnpg.io/v1", "ScheduledBackup"),
}
BUILTIN_GROUPS = {"v1", "apps", "batch", "policy", "autoscaling", "networking.k8s.io"}


def _group(api_version: str) -> str:
    return api_version.split("/")[0] if "/" in api_version else "v1"


def is_builtin(doc: Doc) -> bool:
    return _group(doc["apiVersion"]) in BUILTIN_GROUPS


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders(overlay: str) -> None:
    docs = render(overlay)
    kinds = {d["kind"] for d in docs}
    assert {"Namespace", "Deployment", "ConfigMap", "NetworkPolicy", "Ingress"} <= kinds
    # What the container tests pick out of the render (tests/kit/k8s.py).
    for name in ("api", "worker"):
        assert one(docs, "Deployment", name)["metadata"]["namespace"] == "ctafleet"
    assert one(docs, "ConfigMap", prefix="ctafleet-config")
    # No Secret with values is ever rendered: they come from the secret store.
    assert not [d for d in docs if d["kind"] == "Secret"]


def _write_renders(tmp_path: Path, broken: Doc) -> dict[str, Path]:
    files = {}
    for overlay in OVERLAYS:
        files[overlay] = tmp_path / f"{overlay}.yaml"
        files[overlay].write_text(render_text(overlay))
    files["broken"] = tmp_path / "broken.yaml"
    files["broken"].write_text(yaml.safe_dump(broken))
    return files


def test_kubernetes_validate_strict_for_each_supported_version(tmp_path: Path) -> None:
    api = copy.deepcopy(one(render("staging"), "Deployment", "api"))
    api["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFS"] = True
    files = _write_renders(tmp_path, api)
    binary = tool("kubernetes-validate")
    # One process per version, all at once: each takes a few seconds of schema work.
    runs = {
        version: subprocess.Popen(
            [binary, "-k", version, "--strict", *map(str, files.values())],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for version in K8S_VERSIONS
    }
    for version, proc in runs.items():
        out, _ = proc.communicate(timeout=300)
        lines = out.splitlines()
        errors = [line for line in lines if line.startswith("ERROR")]
        assert errors, f"{version}: the broken Deployment passed:\n{out[-2000:]}"
        assert all(str(files["broken"]) in line for line in errors), "\n".join(errors)
        assert "readOnlyRootFS" in errors[0]
        for overlay in OVERLAYS:
            builtin = [d for d in render(overlay) if is_builtin(d)]
            passed = [line for line in lines if line.startswith(f"INFO {files[overlay]} passed")]
            assert len(passed) == len(builtin), f"{version} {overlay}: {len(passed)} passed"
        # Only custom resources lack a schema here; they are validated below.
        for line in lines:
            if line.startswith("WARN") and "Couldn't find schema" in line:
                assert not any(f"with api version {g}/" in line for g in BUILTIN_GROUPS - {"v1"})


# --- custom resources against the vendored CRD schemas --------------------------------------


def _strict(schema: Any) -> Any:
    """additionalProperties: false wherever an object lists its properties and says nothing
    of others, as the API server's strict field validation refuses unknown fields."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if "properties" in out and "additionalProperties" not in out and out["properties"]:
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


def _registry() -> referencing.Registry[Any]:
    machinery = json.loads((SCHEMAS / "_apimachinery.json").read_text())
    resources = [
        (uri, referencing.Resource.from_contents(_strict(s), referencing.jsonschema.DRAFT7))
        for uri, s in machinery.items()
    ]
    return referencing.Registry().with_resources(resources)


def crd_errors(doc: Doc) -> list[str]:
    """Problems of a custom resource against its vendored schema; KeyError without one."""
    group, version = doc["apiVersion"].split("/")
    path = SCHEMAS / group / f"{doc['kind'].lower()}_{version}.json"
    if not path.exists():
        raise KeyError((doc["apiVersion"], doc["kind"]))
    schema = _strict(json.loads(path.read_text()))
    validator = jsonschema.Draft7Validator(schema, registry=_registry())
    return [
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)
    ]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_custom_resources_pass_their_published_schemas(overlay: str) -> None:
    without = set()
    checked = 0
    for doc in render(overlay):
        if is_builtin(doc):
            continue
        try:
            errors = crd_errors(doc)
        except KeyError:
            without.add((doc["apiVersion"], doc["kind"]))
            continue
        checked += 1
        assert errors == [], f"{doc['kind']} {doc['metadata']['name']}: {errors}"
    assert checked >= 10
    # A new kind of custom resource needs its schema vendored, or a reason in the README.
    assert without <= WITHOUT_SCHEMA, without - WITHOUT_SCHEMA


def test_crd_schema_validation_catches_misspelt_and_mistyped_fields() -> None:
    docs = render("staging")
    cert = copy.deepcopy(one(docs, "Certificate", "ctafleet-tls"))
    cert["spec"]["dnsName"] = cert["spec"].pop("dnsNames")
    errors = crd_errors(cert)
    assert any("dnsName" in e for e in errors), errors  # unknown field and missing dnsNames
    scaled = copy.deepcopy(one(docs, "ScaledObject", "worker"))
    scaled["spec"]["maxReplicaCount"] = "16"
    assert any("maxReplicaCount" in e for e in crd_errors(scaled))
    monitor = copy.deepcopy(one(docs, "ServiceMonitor", "api"))
    monitor["metadata"]["labels"] = {"a": 1}
    assert any(e.startswith("metadata:") for e in crd_errors(monitor))  # via ObjectMeta


# --- checkov --------------------------------------------------------------------------------

ALLOWED_SKIPS = {"CKV_K8S_35", "CKV_K8S_43"}


def test_checkov_finds_no_failed_check(tmp_path: Path) -> None:
    worker = copy.deepcopy(one(render("staging"), "Deployment", "worker"))
    worker["metadata"]["name"] = "broken"
    worker["metadata"].pop("annotations")  # no skips: every finding counts
    container = worker["spec"]["template"]["spec"]["containers"][0]
    container["securityContext"]["privileged"] = True
    files = _write_renders(tmp_path, worker)
    env = {
        **os.environ,
        "BC_SKIP_MAPPING": "TRUE",
        "CKV_SKIP_PACKAGE_UPDATE_CHECK": "true",
        "CHECKPOINT_DISABLE": "1",
        "HOME": str(tmp_path),  # its caches, not the user's
    }
    args = [tool("checkov"), "--framework", "kubernetes", "--skip-download", "--compact"]
    for path in files.values():
        args += ["-f", str(path)]
    result = subprocess.run(
        [*args, "-o", "json"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    report = json.loads(result.stdout)
    report = report if isinstance(report, list) else [report]
    failed = [f for r in report for f in r["results"]["failed_checks"]]
    skipped = [f for r in report for f in r["results"]["skipped_checks"]]
    passed = sum(r["summary"]["passed"] for r in report)
    assert result.returncode == 1  # the broken copy fails...
    assert {f["file_path"].rsplit("/", 1)[-1] for f in failed} == {"broken.yaml"}, [
        (f["check_id"], f["resource"], f["file_path"]) for f in failed
    ]
    assert "CKV_K8S_16" in {f["check_id"] for f in failed}  # privileged container
    assert passed > 500  # ...and the real renders were scanned, all of it
    for skip in skipped:
        assert skip["check_id"] in ALLOWED_SKIPS, skip["check_id"]
        reason = skip["check_result"].get("suppress_comment", "")
        assert len(reason) > 40, f"unjustified skip of {skip['check_id']}: {reason!r}"
