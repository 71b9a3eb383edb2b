"""Real PostgreSQL clusters, pgBackRest and an HTTPS Azurite, started on loopback per test.

Clusters are made with initdb and driven with pg_ctl as the `postgres` account (initdb
refuses root), under a directory of /tmp that account can traverse. Their configuration is
deploy/pgbackrest/postgresql.conf.snippet as shipped, and pgBackRest's is rendered from
deploy/pgbackrest/pgbackrest.conf with only the machine-specific keys replaced, so the tests
exercise the documented configuration itself. Secrets travel as PGBACKREST_* variables,
as the template prescribes.

Without the tools (scripts/install-dr-tools.sh installs them) or root, the tests skip;
CTAFLEET_REQUIRE_SERVICES=1 turns that into a failure.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from ctafleet.ops.dr.pgbackrest import parse_config
from ctafleet.ops.dr.proc import DrError, OsUser, find_pg_bin
from tests.conftest import service_unavailable
from tests.kit.net import free_port

ROOT = Path(__file__).resolve().parents[3]
TEMPLATE = ROOT / "deploy" / "pgbackrest" / "pgbackrest.conf"
SNIPPET = ROOT / "deploy" / "pgbackrest" / "postgresql.conf.snippet"
AZURITE = ROOT / ".tools" / "azurite" / "node_modules" / ".bin" / "azurite-blob"
STANZA = "ctafleet"
# Azurite's fixed development account (documented publicly; it only opens the emulator).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
REPO_NUMBER = {"azure": 1, "posix": 2}  # as numbered in the template


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture(scope="session")
def postgres_user() -> OsUser:
    if os.geteuid() != 0:
        service_unavailable("the DR tests run PostgreSQL as the postgres account: run as root")
    try:
        user = OsUser.named("postgres")
        find_pg_bin("initdb")
        find_pg_bin("pg_ctl")
    except DrError as exc:
        service_unavailable(f"{exc} (scripts/install-dr-tools.sh)")
    if shutil.which("pgbackrest") is None:
        service_unavailable("pgbackrest is not installed (scripts/install-dr-tools.sh)")
    return user


@pytest.fixture(scope="session")
def dr_root(postgres_user: OsUser) -> Iterator[Path]:
    """A short path (Unix socket paths are limited to 107 bytes) every account can traverse."""
    root = Path(tempfile.mkdtemp(prefix="ctafleet-dr-", dir="/tmp"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def as_postgres(
    user: OsUser, argv: list[str], env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {}), "HOME": user.home}
    result = subprocess.run(
        argv,
        user=user.uid,
        group=user.gid,
        extra_groups=[],
        env=full_env,
        cwd="/",
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(
            f"{' '.join(argv)} failed ({result.returncode}):\n{result.stderr}\n{result.stdout}"
        )
    return result


# --- Azurite over HTTPS -------------------------------------------------------------------


@dataclass
class Azurite:
    port: int
    cert: Path

    def _request(self, method: str, path: str, query: dict[str, str]) -> bytes:
        """A SharedKey-signed Blob service request (the emulator's account key)."""
        date = email.utils.formatdate(usegmt=True)
        version = "2021-08-06"
        canonical_query = "".join(f"\n{k}:{v}" for k, v in sorted(query.items()))
        string_to_sign = "\n".join(
            [
                method,
                "",
                "",
                "",
                "",
                "",
                "",
                "",
                "",
                "",
                "",
                "",
                f"x-ms-date:{date}\nx-ms-version:{version}",
                f"/{AZURITE_ACCOUNT}/{AZURITE_ACCOUNT}/{path}{canonical_query}",
            ]
        )
        signature = base64.b64encode(
            hmac.new(
                base64.b64decode(AZURITE_KEY), string_to_sign.encode(), hashlib.sha256
            ).digest()
        ).decode()
        qs = "&".join(f"{k}={urllib.parse.quote(v)}" for k, v in query.items())
        request = urllib.request.Request(
            f"https://127.0.0.1:{self.port}/{AZURITE_ACCOUNT}/{path}" + (f"?{qs}" if qs else ""),
            method=method,
            headers={
                "x-ms-date": date,
                "x-ms-version": version,
                "Authorization": f"SharedKey {AZURITE_ACCOUNT}:{signature}",
                "Content-Length": "0",
            },
        )
        context = ssl.create_default_context(cafile=str(self.cert))
        with urllib.request.urlopen(request, context=context, timeout=10) as response:
            return bytes(response.read())

    def create_container(self, name: str) -> None:
        self._request("PUT", name, {"restype": "container"})

    def list_blobs(self, container: str) -> list[str]:
        body = self._request("GET", container, {"comp": "list", "restype": "container"})
        root = ET.fromstring(body)  # noqa: S314 - the emulator this fixture started
        return [n.text or "" for n in root.iter("Name")]

    def get_blob(self, container: str, name: str) -> bytes:
        return self._request("GET", f"{container}/{urllib.parse.quote(name)}", {})


@pytest.fixture(scope="session")
def azurite(dr_root: Path) -> Iterator[Azurite]:
    if not AZURITE.exists():
        service_unavailable(f"Azurite is not installed at {AZURITE} (scripts/install-dr-tools.sh)")
    if shutil.which("openssl") is None:
        service_unavailable("openssl is not installed")
    base = dr_root / "azurite"
    base.mkdir()
    cert, key = base / "azurite.crt", base / "azurite.key"
    # pgBackRest matches the host name against DNS entries only, even for an IP address; the
    # IP entry is for every other client.
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1,DNS:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    cert.chmod(0o644)
    port = free_port()
    log = (base / "azurite.log").open("w")
    process = subprocess.Popen(
        [str(AZURITE), "--blobHost", "127.0.0.1", "--blobPort", str(port),
         "--location", str(base / "data"), "--skipApiVersionCheck", "--disableTelemetry",
         "--loose", "--cert", str(cert), "--key", str(key)],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:

        def listening() -> bool:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return True
            except OSError:
                return process.poll() is not None

        wait_for(listening, 30, "Azurite to listen")
        if process.poll() is not None:
            raise AssertionError(f"Azurite exited: {(base / 'azurite.log').read_text()}")
        yield Azurite(port, cert)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
        log.close()


# --- PostgreSQL clusters ------------------------------------------------------------------


@dataclass
class Cluster:
    name: str
    root: Path
    port: int
    user: OsUser
    env: dict[str, str] = field(default_factory=dict)  # what the server and tools inherit
    container: str | None = None  # of its Azure repository

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "run"

    @property
    def log(self) -> Path:
        return self.root / "server.log"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@/postgres?host={self.socket_dir}&port={self.port}"

    def db_url(self, database: str) -> str:
        return f"postgresql://postgres@/{database}?host={self.socket_dir}&port={self.port}"

    def connect(self, database: str = "postgres", **kwargs: Any) -> psycopg.Connection[Any]:
        kwargs.setdefault("autocommit", True)
        return psycopg.connect(
            host=str(self.socket_dir), port=self.port, user="postgres", dbname=database,
            connect_timeout=5, **kwargs,
        )  # fmt: skip

    def sql(self, query: str, database: str = "postgres") -> list[tuple[Any, ...]]:
        with self.connect(database) as conn:
            cur = conn.execute(query.encode())
            return cur.fetchall() if cur.description else []

    def value(self, query: str, database: str = "postgres") -> Any:
        return self.sql(query, database)[0][0]

    def pg_ctl(self, *args: str, timeout: float = 60) -> None:
        as_postgres(
            self.user,
            [find_pg_bin("pg_ctl", self.data), "-D", str(self.data), "-l", str(self.log), *args],
            self.env,
            timeout,
        )

    def start(self) -> None:
        self.pg_ctl("-w", "-t", "60", "start")

    def running(self) -> bool:
        pid_file = self.data / "postmaster.pid"
        if not pid_file.exists():
            return False
        try:
            os.kill(int(pid_file.read_text().split()[0]), 0)
            return True
        except (ProcessLookupError, ValueError):
            return False

    def stop(self, mode: str = "fast") -> None:
        if self.running():
            self.pg_ctl("-m", mode, "-w", "stop")

    def kill9(self) -> None:
        """What a power cut does to the server: every process of it dies at once."""
        pid = int((self.data / "postmaster.pid").read_text().split()[0])
        os.killpg(os.getpgid(pid), signal.SIGKILL)
        wait_for(lambda: not self.running(), 10, "the killed server to disappear")

    def switch_and_wait_archived(self, timeout: float = 30) -> str:
        segment = self.value("SELECT pg_walfile_name(pg_switch_wal())")
        wait_for(
            lambda: (self.value("SELECT last_archived_wal FROM pg_stat_archiver") or "") >= segment,
            timeout,
            f"{segment} to be archived",
        )
        return str(segment)

    def pgbackrest(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return as_postgres(
            self.user, ["pgbackrest", f"--stanza={STANZA}", *args], self.env, timeout
        )

    def pgbackrest_bytes(self, *args: str) -> bytes:
        return subprocess.run(
            ["pgbackrest", f"--stanza={STANZA}", *args],
            env={**os.environ, **self.env}, user=self.user.uid, group=self.user.gid,
            extra_groups=[], cwd="/", capture_output=True, check=True, timeout=60,
        ).stdout  # fmt: skip


def render_pgbackrest_config(overrides: dict[str, dict[str, str]], drop_repos: set[int]) -> str:
    """The template with its machine-specific keys replaced and unused repositories removed."""
    sections = parse_config(TEMPLATE.read_text())
    for section, values in overrides.items():
        sections.setdefault(section, {}).update(values)
    lines = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            if any(key.startswith(f"repo{n}-") for n in drop_repos):
                continue
            lines.append(f"{key}={value}")
        lines.append("")
    return "\n".join(lines)


@dataclass
class ClusterFactory:
    root: Path
    user: OsUser
    azurite: Azurite | None
    clusters: list[Cluster] = field(default_factory=list)

    def __call__(
        self,
        name: str,
        *,
        repos: tuple[str, ...] = ("posix",),
        archive: bool = True,
        extra_conf: str = "",
        initdb: bool = True,
    ) -> Cluster:
        base = self.root / f"{name}-{secrets.token_hex(2)}"
        base.mkdir()
        (base / "run").mkdir()
        for d in (base, base / "run"):
            os.chown(d, self.user.uid, self.user.gid)
        cluster = Cluster(name, base, free_port(), self.user)
        self.clusters.append(cluster)
        if initdb:
            as_postgres(
                self.user,
                [find_pg_bin("initdb"), "-D", str(cluster.data), "-U", "postgres",
                 "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8", "--data-checksums",
                 "--no-sync"],
            )  # fmt: skip
        config = base / "pgbackrest.conf"
        # Only the repositories in use: a PGBACKREST_REPOn_* variable alone defines repo n.
        cluster.env = {"PGBACKREST_CONFIG": str(config)}
        for kind in repos:
            cluster.env[f"PGBACKREST_REPO{REPO_NUMBER[kind]}_CIPHER_PASS"] = secrets.token_urlsafe(
                32
            )
        if "azure" in repos:
            cluster.env["PGBACKREST_REPO1_AZURE_KEY"] = AZURITE_KEY
        for sub in ("log", "spool", "lock", "repo"):
            (base / "pgbackrest" / sub).mkdir(parents=True)
        overrides = {
            "global": {
                "log-path": str(base / "pgbackrest" / "log"),
                "spool-path": str(base / "pgbackrest" / "spool"),
                "lock-path": str(base / "pgbackrest" / "lock"),
                "log-level-console": "warn",
                "repo2-path": str(base / "pgbackrest" / "repo"),
            },
            STANZA: {
                "pg1-path": str(cluster.data),
                "pg1-port": str(cluster.port),
                "pg1-socket-path": str(cluster.socket_dir),
            },
        }
        if "azure" in repos:
            if self.azurite is None:
                raise AssertionError("an Azure repository needs the azurite fixture")
            container = f"pgbackrest-{name}-{secrets.token_hex(3)}".lower()
            self.azurite.create_container(container)
            overrides["global"].update(
                {
                    "repo1-azure-account": AZURITE_ACCOUNT,
                    "repo1-azure-container": container,
                    # SAS in production; the emulator's fixed account key here.
                    "repo1-azure-key-type": "shared",
                    "repo1-storage-host": "127.0.0.1",
                    "repo1-storage-port": str(self.azurite.port),
                    "repo1-azure-uri-style": "path",
                    "repo1-storage-ca-file": str(self.azurite.cert),
                }
            )
            cluster.container = container
        drop = {n for kind, n in REPO_NUMBER.items() if kind not in repos}
        config.write_text(render_pgbackrest_config(overrides, drop))
        config.chmod(0o640)
        if initdb:
            conf = [
                f"port = {cluster.port}",
                "listen_addresses = '127.0.0.1'",
                f"unix_socket_directories = '{cluster.socket_dir}'",
                SNIPPET.read_text(),
            ]
            if not archive:
                conf.append("archive_mode = off")
            conf.append(extra_conf)
            with (cluster.data / "postgresql.conf").open("a") as handle:
                handle.write("\n".join(conf) + "\n")
        subprocess.run(["chown", "-R", "postgres:postgres", str(base)], check=True)
        return cluster

    def stop_all(self) -> None:
        for cluster in self.clusters:
            try:
                cluster.stop("immediate")
            except Exception:
                if cluster.running():
                    cluster.kill9()


@pytest.fixture
def make_cluster(dr_root: Path, postgres_user: OsUser) -> Iterator[ClusterFactory]:
    factory = ClusterFactory(dr_root, postgres_user, None)
    try:
        yield factory
    finally:
        factory.stop_all()
        for cluster in factory.clusters:
            shutil.rmtree(cluster.root, ignore_errors=True)


@pytest.fixture
def make_cluster_azure(make_cluster: ClusterFactory, azurite: Azurite) -> ClusterFactory:
    make_cluster.azurite = azurite
    return make_cluster


def with_stanza(cluster: Cluster) -> None:
    """Started, with its stanza created before the first segment is archived (an archiver
    that finds no stanza holds the archive lock a moment, and stanza-create fails on it)."""
    if not cluster.running():
        cluster.start()
    cluster.pgbackrest("stanza-create")
    cluster.pgbackrest("check")


def backed_up(cluster: Cluster, repos: tuple[str, ...]) -> None:
    """A started cluster with its stanza, a passing check and a full backup per repository."""
    with_stanza(cluster)
    for kind in repos:
        cluster.pgbackrest(f"--repo={REPO_NUMBER[kind]}", "--type=full", "backup")


def run_dr(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """`ctafleet dr ...` in its own process, as an operator would run it (as root)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "ctafleet.ops.dr", *args],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
