#!/usr/bin/env python3
"""Re-vendors the custom resources' JSON schemas kept beside this script (see README.md).

Each npm package below was generated from an operator's published CRD manifests; its model
modules carry the CRD's openAPIV3Schema as a JSON literal (`const schema = {...};`). This
fetches the packages with `npm pack` (the npm registry, nothing else), cuts those literals
out unchanged and writes one file per kind, plus the Kubernetes ObjectMeta schemas they refer
to. Run from anywhere: python3 deploy/k8s/schemas/vendor.py
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

# package@version -> {(apiVersion, kind): module path inside the package}
PACKAGES: dict[str, dict[tuple[str, str], str]] = {
    "@kubernetes-models/cert-manager@4.3.1": {
        ("cert-manager.io/v1", "Certificate"): "cert-manager.io/v1/Certificate.js",
        ("cert-manager.io/v1", "ClusterIssuer"): "cert-manager.io/v1/ClusterIssuer.js",
    },
    "@kubernetes-models/prometheus-operator@4.0.0": {
        (
            "monitoring.coreos.com/v1",
            "ServiceMonitor",
        ): "monitoring.coreos.com/v1/ServiceMonitor.js",
        ("monitoring.coreos.com/v1", "PodMonitor"): "monitoring.coreos.com/v1/PodMonitor.js",
        (
            "monitoring.coreos.com/v1",
            "PrometheusRule",
        ): "monitoring.coreos.com/v1/PrometheusRule.js",
    },
    "@kubernetes-models/keda@0.3.2": {
        ("keda.sh/v1alpha1", "ScaledObject"): "keda.sh/v1alpha1/ScaledObject.js",
        ("keda.sh/v1alpha1", "TriggerAuthentication"): "keda.sh/v1alpha1/TriggerAuthentication.js",
    },
}
# The ObjectMeta the CRD schemas refer to, and what it refers to in turn.
APIMACHINERY = "@kubernetes-models/apimachinery@1.2.2"

SCHEMA = re.compile(r"const schema = (\{.*?\n\});\n", re.S)
REF = re.compile(r'"\$ref": "([^"#]+)#"')


def literal(text: str, where: str) -> dict[str, object]:
    match = SCHEMA.search(text)
    if match is None:
        raise SystemExit(f"{where}: no `const schema = {{...}}` literal (package layout changed?)")
    return json.loads(match.group(1))  # type: ignore[no-any-return]


def unpack(spec: str, into: Path) -> Path:
    out = into / re.sub(r"[^A-Za-z0-9.]+", "_", spec)
    out.mkdir()
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit("npm is not installed: it fetches the schema packages")
    subprocess.run(  # noqa: S603 - the pinned package specs of this file
        [npm, "pack", "--silent", spec, "--pack-destination", str(out)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    (tgz,) = out.glob("*.tgz")
    with tarfile.open(tgz) as tar:
        tar.extractall(out, filter="data")
    return out / "package"


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        refs: set[str] = set()
        for spec, kinds in PACKAGES.items():
            package = unpack(spec, Path(tmp))
            for (api_version, kind), module in kinds.items():
                text = (package / module).read_text()
                schema = literal(text, f"{spec}/{module}")
                refs |= set(REF.findall(text))
                group, version = api_version.split("/")
                path = HERE / group / f"{kind.lower()}_{version}.json"
                path.parent.mkdir(exist_ok=True)
                path.write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n")
                print(f"{spec}: {api_version} {kind} -> {path.relative_to(HERE)}")
        machinery = unpack(APIMACHINERY, Path(tmp)) / "_schemas"
        definitions: dict[str, object] = {}
        pending = sorted(refs)
        while pending:
            ref = pending.pop()
            if ref in definitions:
                continue
            module = "".join(p[:1].upper() + p[1:] for p in ref.split("."))
            text = (machinery / f"{module}.js").read_text()
            definitions[ref] = literal(text, f"{APIMACHINERY}/{module}")
            pending += [r for r in REF.findall(text) if r not in definitions]
        out = HERE / "_apimachinery.json"
        out.write_text(json.dumps(definitions, indent=1, sort_keys=True) + "\n")
        print(f"{APIMACHINERY}: {', '.join(sorted(definitions))} -> {out.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
