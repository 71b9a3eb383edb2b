#!/usr/bin/env python3
"""Writes deploy/k8s/base/prometheusrules.yaml: one PrometheusRule per rules file of
deploy/monitoring/prometheus/rules, groups copied unchanged, so the Prometheus Operator
evaluates exactly what promtool tests. `--check` compares instead of writing (exit 1 and a
diff when the file is stale); tests/deploy/k8s runs it.

  python3 deploy/k8s/generate-prometheusrules.py [--check] [--rules DIR] [--out FILE]
"""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "monitoring" / "prometheus" / "rules"
OUT = ROOT / "deploy" / "k8s" / "base" / "prometheusrules.yaml"
HEADER = """\
# Generated from deploy/monitoring/prometheus/rules/*.yml by
# deploy/k8s/generate-prometheusrules.py; do not edit (a test fails when it is stale).
"""


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    # Multi-line PromQL and descriptions stay readable as block scalars.
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def render(rules_dir: Path) -> str:
    files = sorted(rules_dir.glob("*.yml"))
    if not files:
        raise SystemExit(f"no rules files (*.yml) in {rules_dir}")
    docs: list[dict[str, Any]] = []
    for path in files:
        content = yaml.safe_load(path.read_text())
        if not isinstance(content, dict) or not content.get("groups"):
            raise SystemExit(f"{path}: no `groups:` list")
        docs.append(
            {
                "apiVersion": "monitoring.coreos.com/v1",
                "kind": "PrometheusRule",
                "metadata": {
                    "name": f"ctafleet-{path.stem}",
                    "namespace": "ctafleet",
                    "labels": {"app.kubernetes.io/name": "ctafleet"},
                },
                "spec": {"groups": content["groups"]},
            }
        )
    body = yaml.dump_all(docs, Dumper=_Dumper, sort_keys=False, width=100, allow_unicode=True)
    return HEADER + body


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    parser.add_argument("--rules", type=Path, default=RULES)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    text = render(args.rules)
    if not args.check:
        args.out.write_text(text)
        print(f"wrote {args.out}")
        return 0
    current = args.out.read_text() if args.out.exists() else ""
    if current == text:
        return 0
    sys.stdout.writelines(
        difflib.unified_diff(
            current.splitlines(keepends=True),
            text.splitlines(keepends=True),
            str(args.out),
            f"rendered from {args.rules}",
        )
    )
    print(f"{args.out} is stale: run python3 deploy/k8s/generate-prometheusrules.py")
    return 1


if __name__ == "__main__":
    sys.exit(main())
