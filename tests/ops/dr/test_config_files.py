"""The shipped DR configuration: the pgBackRest template, the PostgreSQL snippet, the
CloudNativePG manifest and the installer. The PITR, drill and failover tests run the first
two for real; these checks pin the properties the RPO/RTO targets rest on."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

from ctafleet.ops.dr.pgbackrest import parse_config

ROOT = Path(__file__).resolve().parents[3]
PGBACKREST = ROOT / "deploy" / "pgbackrest"
CNPG = ROOT / "deploy" / "k8s" / "components" / "self-managed" / "cnpg-cluster.yaml"
INSTALLER = ROOT / "scripts" / "install-dr-tools.sh"


def _settings(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "=" in line:
            key, value = (p.strip() for p in line.split("=", 1))
            out[key] = value.strip("'")
    return out


def test_pgbackrest_template_encrypts_both_repositories_and_keeps_no_secret() -> None:
    config = parse_config((PGBACKREST / "pgbackrest.conf").read_text())
    glob = config["global"]
    assert glob["repo1-type"] == "azure"
    assert glob["repo2-type"] == "posix"
    assert glob["repo1-cipher-type"] == glob["repo2-cipher-type"] == "aes-256-cbc"
    assert glob["compress-type"] == "zst"
    assert glob["archive-async"] == "y"
    assert glob["start-fast"] == "y"
    for n in (1, 2):
        assert int(glob[f"repo{n}-retention-full"]) >= 2
    keys = {k for section in config.values() for k in section}
    assert not keys & {"repo1-cipher-pass", "repo2-cipher-pass", "repo1-azure-key"}
    assert config["ctafleet"]["pg1-path"]


def test_postgresql_snippet_bounds_the_rpo() -> None:
    settings = _settings(PGBACKREST / "postgresql.conf.snippet")
    assert settings["wal_level"] == "replica"
    assert settings["archive_mode"] == "on"
    assert settings["archive_command"] == "pgbackrest --stanza=ctafleet archive-push %p"
    assert 0 < int(settings["archive_timeout"]) <= 60
    assert int(settings["max_wal_senders"]) >= 3
    assert settings["synchronous_commit"] == "on"
    assert settings["track_commit_timestamp"] == "on"


def test_cloudnativepg_manifest_has_three_instances_and_azure_backups() -> None:
    docs = [d for d in yaml.safe_load_all(CNPG.read_text()) if d]
    by_kind = {d["kind"]: d for d in docs}
    assert set(by_kind) == {"Cluster", "ScheduledBackup"}
    cluster = by_kind["Cluster"]
    assert cluster["apiVersion"] == "postgresql.cnpg.io/v1"
    spec = cluster["spec"]
    assert spec["instances"] == 3
    assert spec["postgresql"]["synchronous"]["number"] >= 1
    timeout = spec["postgresql"]["parameters"]["archive_timeout"]
    assert int(re.fullmatch(r"(\d+)s", timeout).group(1)) <= 60  # type: ignore[union-attr]
    backup = spec["backup"]
    assert re.fullmatch(r"\d+[dwm]", backup["retentionPolicy"])
    store = backup["barmanObjectStore"]
    assert store["destinationPath"].startswith("https://")
    assert ".blob.core.windows.net/" in (store["destinationPath"])
    creds = store["azureCredentials"]
    secret_names = {ref["name"] for ref in creds.values()}
    assert secret_names == {"ctafleet-db-backup-azure"}  # values come from a Secret only
    assert store["wal"]["compression"]
    assert store["data"]["compression"]
    scheduled = by_kind["ScheduledBackup"]["spec"]
    assert scheduled["cluster"]["name"] == cluster["metadata"]["name"]
    assert len(scheduled["schedule"].split()) == 6
    assert scheduled["method"] == "barmanObjectStore"


def test_installer_is_valid_shell_and_starts_nothing() -> None:
    subprocess.run(["bash", "-n", str(INSTALLER)], check=True)
    text = INSTALLER.read_text()
    assert "command -v pgbackrest" in text
    assert not re.search(r"\b(pg_ctl|azurite-blob)\b[^\n]*\bstart\b", text)
