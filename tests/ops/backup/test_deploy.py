"""The schedule manifests: the Kubernetes CronJob against the API schema (kubernetes-validate,
strict), the systemd units with systemd-analyze; plus what the issue asks of them."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import service_unavailable

ROOT = Path(__file__).resolve().parents[3]
CRONJOB = ROOT / "deploy" / "k8s" / "base" / "backup-cronjob.yaml"
SYSTEMD = ROOT / "deploy" / "systemd"
K8S_VERSION = "1.30.0"


def kubernetes_validate(path: Path) -> subprocess.CompletedProcess[str]:
    binary = Path(sys.executable).with_name("kubernetes-validate")
    if not binary.exists():
        service_unavailable("kubernetes-validate is not installed (pip install -r requirements)")
    return subprocess.run(
        [str(binary), "-k", K8S_VERSION, "--strict", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]  # type: ignore[no-any-return]


def test_cronjob_passes_strict_schema_validation() -> None:
    result = kubernetes_validate(CRONJOB)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "passed" in result.stdout + result.stderr


def test_schema_validation_can_fail(tmp_path: Path) -> None:
    doc = yaml.safe_load(CRONJOB.read_text())
    pod_spec(doc)["initContainers"][0]["securityContext"]["readOnlyRootFS"] = True  # a typo
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump(doc))
    assert kubernetes_validate(broken).returncode != 0


def test_cronjob_schedule_and_hardening() -> None:
    doc = yaml.safe_load(CRONJOB.read_text())
    assert doc["kind"] == "CronJob"
    spec = doc["spec"]
    assert spec["schedule"] == "0 2 * * *"
    assert spec["timeZone"] == "Etc/UTC"
    assert spec["concurrencyPolicy"] == "Forbid"
    pod = pod_spec(doc)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["automountServiceAccountToken"] is False
    containers = pod["initContainers"] + pod["containers"]
    assert [c["command"] for c in containers] == [
        ["ctafleet", "backup", "create"],
        ["ctafleet", "backup", "prune"],
    ]
    for container in containers:
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
        assert {"cpu", "memory"} <= set(container["resources"]["requests"])
        assert {"cpu", "memory"} <= set(container["resources"]["limits"])
        env = {e["name"]: e for e in container["env"]}
        # The credentials are files of the Secret, named by the variables they set.
        directory = env["CTAFLEET_SECRETS_DIR"]["value"]
        mount = next(m for m in container["volumeMounts"] if m["mountPath"] == directory)
        assert mount["readOnly"] is True
        volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
        files = {
            item["path"]: (source["secret"]["name"], source["secret"].get("optional", False))
            for source in volume["projected"]["sources"]
            for item in source["secret"]["items"]
        }
        for secret in ("CTAFLEET_DATABASE__URL", "CTAFLEET_STORAGE__AZURE_CONNECTION_STRING"):
            assert files[secret] == ("ctafleet-backup", False)
            assert secret not in env
        assert not any("IDENTITY" in name for name in [*env, *files])  # no private key here
        for item in container["env"]:
            assert "value" not in item or "://" not in item["value"] or "@" not in item["value"]


def _units() -> dict[str, configparser.ConfigParser]:
    units = {}
    for path in sorted(SYSTEMD.iterdir()):
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        parser.optionxform = str  # type: ignore[assignment,method-assign]
        parser.read_string(path.read_text())
        units[path.name] = parser
    return units


def test_systemd_timer_and_service() -> None:
    units = _units()
    timer = units["ctafleet-backup.timer"]
    assert timer["Timer"]["OnCalendar"] == "*-*-* 02:00:00 UTC"
    assert timer["Timer"]["Persistent"] == "true"
    assert timer["Timer"]["Unit"] == "ctafleet-backup.service"
    service = units["ctafleet-backup.service"]["Service"]
    assert service["Type"] == "oneshot"
    assert service["User"] != "root"
    assert service["ExecStart"].endswith("ctafleet backup create")
    assert service["ExecStartPost"].endswith("ctafleet backup prune")
    assert units["ctafleet-backup-verify.service"]["Service"]["ExecStart"].endswith(
        "ctafleet backup verify --latest"
    )


def test_systemd_units_verify(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        service_unavailable("systemd-analyze is not installed (Debian package systemd)")
    ctafleet = Path(sys.executable).with_name("ctafleet")
    # The entry point comes with the package's install: without it the install is broken.
    assert ctafleet.exists(), f"{ctafleet} missing: reinstall the package (make install)"
    for path in SYSTEMD.iterdir():
        # The units name the install path of a VM; here the venv's entry point stands in.
        text = path.read_text().replace("/opt/ctafleet/.venv/bin/ctafleet", str(ctafleet))
        (tmp_path / path.name).write_text(text)
    names = sorted(p.name for p in tmp_path.iterdir())
    result = subprocess.run(
        ["systemd-analyze", "verify", *[f"./{n}" for n in names]],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
