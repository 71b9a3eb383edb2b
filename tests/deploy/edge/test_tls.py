"""The edge terminating TLS (CTAFLEET_EDGE_TLS=on), probed with `openssl s_client` and plain
HTTP clients: the protocols and ciphers it accepts, HSTS on HTTPS only, the HTTP port's three
jobs (ACME HTTP-01, its own health check, a redirect for everything else), and the runtime
contract of the image (UID 10002, read-only root filesystem)."""

from __future__ import annotations

import os
import ssl
from pathlib import Path

import pytest

from tests.conftest import service_unavailable
from tests.deploy.edge.kit import fetch, s_client
from tests.kit.edge import EDGE_UID, CertAuthority, Edge, as_root

HSTS = "max-age=63072000; includeSubDomains"


@pytest.fixture(scope="module")
def ca_file(ca: CertAuthority, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    path.write_bytes(ca.pem)
    return path


# --- protocols and ciphers -------------------------------------------------------------------


@pytest.mark.parametrize("flag", ["-tls1", "-tls1_1"])
def test_tls_1_0_and_1_1_are_refused(edge: Edge, flag: str) -> None:
    # SECLEVEL=0 lets this client offer the old protocol: the refusal is the server's alert.
    result = s_client(edge, flag, "-cipher", "DEFAULT@SECLEVEL=0")
    assert result.returncode != 0
    assert "alert protocol version" in result.stdout + result.stderr


@pytest.mark.parametrize(("flag", "protocol"), [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")])
def test_tls_1_2_and_1_3_negotiate(edge: Edge, ca_file: Path, flag: str, protocol: str) -> None:
    result = s_client(edge, flag, "-alpn", "h2,http/1.1", ca_file=ca_file)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"New, {protocol}, Cipher is " in result.stdout
    assert "Verify return code: 0 (ok)" in result.stdout
    assert "ALPN protocol: h2" in result.stdout


@pytest.mark.parametrize(
    ("cipher", "accepted"),
    [
        ("ECDHE-ECDSA-AES128-GCM-SHA256", True),
        ("ECDHE-ECDSA-CHACHA20-POLY1305", True),
        # CBC suites (in OpenSSL's and nginx's defaults) are not offered.
        ("ECDHE-ECDSA-AES128-SHA", False),
        ("ECDHE-ECDSA-AES256-SHA384", False),
    ],
)
def test_tls_1_2_ciphers(edge: Edge, cipher: str, accepted: bool) -> None:
    result = s_client(edge, "-tls1_2", "-cipher", cipher)
    if accepted:
        assert result.returncode == 0, result.stderr
        assert f"Cipher    : {cipher}" in result.stdout
    else:
        assert result.returncode != 0
        assert "alert handshake failure" in result.stdout + result.stderr


def test_no_session_tickets(edge: Edge) -> None:
    result = s_client(edge, "-tls1_2")
    assert result.returncode == 0, result.stderr
    assert "Session-ID: " in result.stdout
    session_id = result.stdout.split("Session-ID: ", 1)[1].split()[0]
    assert len(session_id) == 64, "a session id for the server's session cache"
    assert "TLS session ticket" not in result.stdout


# --- headers and the HTTP port ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/edge/healthz", 200),  # nginx's own answer
        ("/healthz", 200),  # the API's (it adds its own HSTS: dropped for the edge's)
        ("/api/v1/vehicles", 401),
        ("/metrics", 404),
    ],
)
def test_https_answers_carry_hsts_once(
    edge: Edge, tls_context: ssl.SSLContext, path: str, status: int
) -> None:
    r = fetch(edge.https_url, path, context=tls_context)
    assert r.status == status
    assert r.header("Strict-Transport-Security") == HSTS
    assert r.header("X-Content-Type-Options") == "nosniff"


def test_http_port_sends_no_hsts(edge: Edge) -> None:
    token = edge.acme_root / ".well-known" / "acme-challenge" / "hsts-probe"
    token.parent.mkdir(parents=True, exist_ok=True)
    token.write_text("hsts-probe.key")
    for path in ("/edge/healthz", "/api/v1/vehicles", "/.well-known/acme-challenge/hsts-probe"):
        r = fetch(edge.http_url, path)
        assert r.status in (200, 301), (path, r.status)
        assert r.header("Strict-Transport-Security") is None, path
        assert r.header("X-Content-Type-Options") == "nosniff"


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_http_redirects_to_https(edge: Edge, method: str) -> None:
    r = fetch(
        edge.http_url,
        "/api/v1/vehicles?limit=5",
        method=method,
        headers={"Host": "fleet.example.com"},
        body=b"{}" if method == "POST" else None,
    )
    assert r.status == 301
    # CTAFLEET_EDGE_PUBLIC_HTTPS_PORT is the test's port; in production it is 443 and omitted.
    expected = f"https://fleet.example.com:{edge.https_port}/api/v1/vehicles?limit=5"
    assert r.header("Location") == expected


def test_acme_challenge_served_over_http(edge: Edge) -> None:
    challenge = edge.acme_root / ".well-known" / "acme-challenge"
    challenge.mkdir(parents=True, exist_ok=True)
    (challenge / "tok-3f9a").write_text("tok-3f9a.thumbprint")
    r = fetch(edge.http_url, "/.well-known/acme-challenge/tok-3f9a")
    assert r.status == 200
    assert r.body == b"tok-3f9a.thumbprint"
    assert r.header("Content-Type") == "text/plain"
    # A token that is not there is a 404 (pebble, like Let's Encrypt, would see a failure),
    # not a redirect to an HTTPS page.
    assert fetch(edge.http_url, "/.well-known/acme-challenge/missing").status == 404
    # Nothing above the webroot: the run directory's rendered configuration stays unseen.
    r = fetch(edge.http_url, "/.well-known/acme-challenge/../../../run/nginx.conf")
    assert b"ctafleet_api" not in r.body


def test_edge_healthz_is_answered_on_both_ports(edge: Edge, tls_context: ssl.SSLContext) -> None:
    for r in (
        fetch(edge.http_url, "/edge/healthz"),
        fetch(edge.https_url, "/edge/healthz", context=tls_context),
    ):
        assert (r.status, r.body) == (200, b"ok\n")


# --- the image's runtime contract -------------------------------------------------------------


def test_runs_as_the_edge_user_on_a_read_only_root(edge: Edge) -> None:
    """What the other tests ran under: nginx (master and workers) as UID 10002 without
    capabilities, `/` read-only, and only the working directory (the container's /tmp)
    writable. Every file nginx needed to write was therefore under the run directory."""
    if not as_root():
        service_unavailable("only root can run nginx as UID 10002 on a read-only root")
    assert edge.proc is not None
    pids = {edge.proc.pid, *edge.worker_pids()}
    assert len(pids) >= 2
    for pid in pids:
        status = Path(f"/proc/{pid}/status").read_text()
        uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
        assert uids == [str(EDGE_UID)] * 4, (pid, uids)
        assert "CapEff:\t0000000000000000" in status
    mounts = {}
    for line in Path(f"/proc/{edge.proc.pid}/mountinfo").read_text().splitlines():
        fields = line.split()
        mounts[fields[4]] = fields[5].split(",")
    assert "ro" in mounts["/"]
    assert "rw" in mounts[str(edge.workdir)]
    assert os.stat(edge.run_dir / "nginx.pid").st_uid == EDGE_UID
