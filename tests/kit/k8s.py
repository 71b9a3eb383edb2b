"""The Kubernetes manifests as a cluster would get them: `kubectl kustomize` of an overlay,
parsed, and ways to pick objects out of it.

    docs = render("staging")
    api = one(docs, "Deployment", "api")
    config = one(docs, "ConfigMap", prefix="ctafleet-config")   # the name carries a hash
    secret = secret_from_template({"CTAFLEET_AUTH__SECRET_KEY": "...", ...})
"""

from __future__ import annotations

import copy
import functools
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from tests.kit.tools import tool

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("staging", "production")
SECRET_TEMPLATE = K8S / "secrets" / "ctafleet-secrets.env.example"
POD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"}

Doc = dict[str, Any]


class RenderError(Exception):
    pass


@functools.cache
def _render_text(path: str) -> str:
    result = subprocess.run(
        [tool("kubectl"), "kustomize", path],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise RenderError(f"kubectl kustomize {path} failed:\n{result.stderr}")
    return result.stdout


def render_text(overlay: str | Path) -> str:
    """The rendered YAML of an overlay (a name under deploy/k8s/overlays, or a directory)."""
    path = K8S / "overlays" / overlay if isinstance(overlay, str) else overlay
    return _render_text(str(path))


@functools.cache
def _parsed(text: str) -> tuple[Doc, ...]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return tuple(d for d in yaml.load_all(text, Loader=loader) if d)


def render(overlay: str | Path) -> list[Doc]:
    """The rendered objects, a fresh copy each call (callers may mutate them)."""
    return copy.deepcopy(list(_parsed(render_text(overlay))))


def select(
    docs: Iterable[Doc],
    kind: str,
    name: str | None = None,
    *,
    namespace: str | None = None,
    prefix: str | None = None,
) -> list[Doc]:
    out = []
    for doc in docs:
        meta = doc.get("metadata", {})
        if doc.get("kind") != kind:
            continue
        if name is not None and meta.get("name") != name:
            continue
        if prefix is not None and not str(meta.get("name", "")).startswith(prefix):
            continue
        if namespace is not None and meta.get("namespace") != namespace:
            continue
        out.append(doc)
    return out


def one(docs: Iterable[Doc], kind: str, name: str | None = None, **kw: Any) -> Doc:
    found = select(docs, kind, name, **kw)
    if len(found) != 1:
        raise LookupError(f"{len(found)} objects of kind {kind} named {name or kw}; want 1")
    return found[0]


def pod_spec(doc: Doc) -> Doc:
    """The pod spec of a workload (a CronJob's through its job template)."""
    spec = doc["spec"]
    if doc["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return spec["template"]["spec"]  # type: ignore[no-any-return]


def pod_labels(doc: Doc) -> dict[str, str]:
    spec = doc["spec"]
    if doc["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return dict(spec["template"].get("metadata", {}).get("labels", {}))


def template_keys(path: Path = SECRET_TEMPLATE) -> tuple[list[str], list[str]]:
    """(required, optional) keys of the Secret template: active lines, commented ones."""
    required, optional = [], []
    for line in path.read_text().splitlines():
        text = line.strip()
        if text.startswith("# CTAFLEET_") and "=" in text:
            optional.append(text[2:].split("=", 1)[0])
        elif text.startswith("CTAFLEET_") and "=" in text:
            required.append(text.split("=", 1)[0])
    return required, optional


def secret_from_template(values: Mapping[str, str], tmp_dir: Path) -> Doc:
    """The Secret ctafleet-secrets as `kubectl create secret --from-env-file` makes it from
    the filled-in template (the documented step); every required key must have a value."""
    required, optional = template_keys()
    missing = [k for k in required if not values.get(k)]
    unknown = sorted(set(values) - set(required) - set(optional))
    if missing or unknown:
        raise ValueError(f"secret values: missing {missing}, not in the template {unknown}")
    env_file = tmp_dir / "ctafleet-secrets.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    env_file.chmod(0o600)
    result = subprocess.run(
        [
            tool("kubectl"),
            "-n",
            "ctafleet",
            "create",
            "secret",
            "generic",
            "ctafleet-secrets",
            f"--from-env-file={env_file}",
            "--dry-run=client",
            "-o",
            "yaml",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        raise RenderError(f"kubectl create secret failed:\n{result.stderr}")
    return yaml.safe_load(result.stdout)  # type: ignore[no-any-return]
