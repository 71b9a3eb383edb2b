"""The edge (deploy/nginx) on loopback, for the tests that need a real nginx in front.

The repository's own templates are rendered by its own entrypoint; nothing here writes nginx
configuration. Run as root (CI), nginx runs as the edge image's UID 10002 on a read-only root
filesystem: a private mount namespace makes `/` read-only and leaves only the edge's working
directory writable, which stands in for the container's /tmp. As another user it runs as that
user, with the root filesystem as it is.

Certificates come from a throwaway CA made with `cryptography`.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import itertools
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.kit.net import free_port, stop_process, wait_listening
from tests.kit.tools import tool

ROOT = Path(__file__).resolve().parents[2]
EDGE_DIR = ROOT / "deploy" / "nginx"
ENTRYPOINT = EDGE_DIR / "entrypoint.sh"
EDGE_UID = 10002  # the edge image's user (deploy/docker/edge)
TEST_HOST = "edge.ctafleet.test"
_counter = itertools.count()


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


@dataclass
class CertAuthority:
    """A CA that issues leaf certificates for loopback servers."""

    name: str = "CTAFleet Test CA"
    key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    cert: x509.Certificate = field(init=False)

    def __post_init__(self) -> None:
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.name)])
        now = utcnow()
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self.key, hashes.SHA256())
        )

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(
        self,
        names: tuple[str, ...] = (TEST_HOST,),
        *,
        valid_for: dt.timedelta = dt.timedelta(days=90),
        ips: tuple[str, ...] = ("127.0.0.1",),
    ) -> tuple[x509.Certificate, bytes, bytes]:
        """(certificate, its PEM, the key's PEM) for `names` and `ips`, valid from now."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = utcnow()
        sans: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
        sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + valid_for)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return cert, cert.public_bytes(serialization.Encoding.PEM), key_pem


def as_root() -> bool:
    return os.geteuid() == 0


def edge_command(workdir: Path, *args: str) -> list[str]:
    """The entrypoint as the edge image runs it: UID 10002, read-only root, only `workdir`
    writable (when root; else as the current user)."""
    if not as_root():
        return [str(ENTRYPOINT), *args]
    for name in ("unshare", "setpriv", "mount"):
        tool(name)
    script = (
        'mount --bind "$1" "$1" && mount -o remount,bind,ro / && shift && '
        f"exec setpriv --reuid={EDGE_UID} --regid={EDGE_UID} --clear-groups "
        '--inh-caps=-all "$@"'
    )
    return [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        script,
        "sh",
        str(workdir),
        str(ENTRYPOINT),
        *args,
    ]


@dataclass
class Edge:
    """The edge with its own working directory (TLS files, ACME webroot, run directory)."""

    upstream: str
    tls: bool = True
    env_extra: dict[str, str] = field(default_factory=dict)
    http_port: int = field(default_factory=free_port)
    https_port: int = field(default_factory=free_port)
    workdir: Path = field(init=False)
    proc: subprocess.Popen[bytes] | None = None
    stdout_path: Path | None = None
    stderr_path: Path | None = None

    def __post_init__(self) -> None:
        while self.https_port == self.http_port:
            self.https_port = free_port()
        for name in ("nginx", "envsubst", "openssl"):
            tool(name)
        # Not under pytest's tmp_path: its 0700 directories would keep UID 10002 out.
        self.workdir = Path(tempfile.mkdtemp(prefix="ctafleet-edge-", dir="/tmp"))
        self.workdir.chmod(0o755)
        for sub, mode in (("tls", 0o700), ("acme", 0o755), ("run", 0o755)):
            (self.workdir / sub).mkdir(mode=mode)
            self._own(self.workdir / sub)

    @property
    def tls_dir(self) -> Path:
        return self.workdir / "tls"

    @property
    def acme_root(self) -> Path:
        return self.workdir / "acme"

    @property
    def run_dir(self) -> Path:
        return self.workdir / "run"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def https_url(self) -> str:
        return f"https://127.0.0.1:{self.https_port}"

    def _own(self, path: Path) -> None:
        if as_root():
            os.chown(path, EDGE_UID, EDGE_UID)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CTAFLEET_")}
        env.update(
            {
                "CTAFLEET_EDGE_TLS": "on" if self.tls else "off",
                "CTAFLEET_EDGE_UPSTREAM": self.upstream,
                "CTAFLEET_EDGE_HTTP_LISTEN": f"127.0.0.1:{self.http_port}",
                "CTAFLEET_EDGE_HTTPS_LISTEN": f"127.0.0.1:{self.https_port}",
                "CTAFLEET_EDGE_PUBLIC_HTTPS_PORT": str(self.https_port),
                "CTAFLEET_EDGE_TLS_DIR": str(self.tls_dir),
                "CTAFLEET_EDGE_ACME_ROOT": str(self.acme_root),
                "CTAFLEET_EDGE_RUN_DIR": str(self.run_dir),
            }
        )
        env.update(self.env_extra)
        return env

    def install_certificate(self, cert_pem: bytes, key_pem: bytes) -> None:
        """tls.crt and tls.key as a deploy hook leaves them: readable by the edge only."""
        for name, data, mode in (("tls.crt", cert_pem, 0o644), ("tls.key", key_pem, 0o600)):
            path = self.tls_dir / name
            tmp = path.with_suffix(".new")
            tmp.write_bytes(data)
            tmp.chmod(mode)
            self._own(tmp)
            tmp.replace(path)

    def _log_file(self, name: str) -> Path:
        """A log file the edge user may open again as /dev/stdout, as the container runtime
        arranges for the container's own standard streams."""
        path = self.workdir / name
        path.touch()
        self._own(path)
        return path

    def command(self, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
        """Run the entrypoint with `args` to completion: (exit code, stdout and stderr)."""
        out = self._log_file(f"cmd-{next(_counter)}.log")
        with out.open("ab") as handle:
            result = subprocess.run(
                edge_command(self.workdir, *args),
                env=env if env is not None else self.env(),
                stdout=handle,
                stderr=subprocess.STDOUT,
                timeout=60,
                check=False,
            )
        return result.returncode, out.read_text(errors="replace")

    def start(self) -> None:
        n = next(_counter)
        self.stdout_path = self._log_file(f"nginx-{n}.out")
        self.stderr_path = self._log_file(f"nginx-{n}.err")
        with self.stdout_path.open("ab") as out, self.stderr_path.open("ab") as err:
            self.proc = subprocess.Popen(
                edge_command(self.workdir, "run"), env=self.env(), stdout=out, stderr=err
            )
        ports = [self.http_port, self.https_port] if self.tls else [self.http_port]
        try:
            for port in ports:
                wait_listening(port, self.proc, timeout=20)
            # Something else may have taken a port between free_port() and nginx's bind (nginx
            # then retries for a while before it gives up): the listeners must be nginx's.
            deadline = time.monotonic() + 20
            while not (self.worker_pids() and all(self._listens(port) for port in ports)):
                assert self.proc.poll() is None, f"nginx exited with {self.proc.returncode}"
                assert time.monotonic() < deadline, f"nginx does not own its ports {ports}"
                time.sleep(0.05)
        except (AssertionError, OSError) as exc:
            self.stop()
            raise AssertionError(f"{exc}\n{self.stderr()}") from None

    def _listens(self, port: int) -> bool:
        """Is nginx's master the owner of the socket listening on 127.0.0.1:port?"""
        assert self.proc is not None
        inodes = set()
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[1] == f"0100007F:{port:04X}" and fields[3] == "0A":  # LISTEN
                inodes.add(f"socket:[{fields[9]}]")
        fds = Path(f"/proc/{self.proc.pid}/fd")
        return any(os.readlink(fd) in inodes for fd in fds.iterdir())

    def reload(self) -> None:
        """`entrypoint.sh reload`, then wait until the old workers are gone (they finish their
        requests first) so that every new connection meets the new configuration."""
        before = self.worker_pids()
        code, output = self.command("reload")
        assert code == 0, output
        deadline = time.monotonic() + 20
        while self.worker_pids() & before:
            assert time.monotonic() < deadline, "the old nginx workers did not exit"
            time.sleep(0.05)

    def worker_pids(self) -> set[int]:
        assert self.proc is not None
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        return {int(p) for p in children.read_text().split()}

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace") if self.stdout_path else ""

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path else ""

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)
