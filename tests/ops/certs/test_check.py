"""`ctafleet ops certs check` against real TLS servers on loopback: the edge's nginx serving a
certificate that expires in two days, and a small Python TLS server for a second host and
for what a check sends. The metric written is the certificate's notAfter; a failed host keeps
its last value and the others are written all the same."""

from __future__ import annotations

import datetime as dt
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner, Result

from ctafleet.cli import app as cli
from ctafleet.ops.certs import metrics
from ctafleet.ops.certs.check import TargetError, parse_target
from tests.kit.edge import TEST_HOST, CertAuthority, Edge
from tests.kit.net import free_port
from tests.ops.certs.kit import OTHER_HOST, TlsServer

ROOT = Path(__file__).resolve().parents[3]


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, ["ops", "certs", "check", *args])


def samples(path: Path) -> dict[tuple[str, str], float]:
    """(metric name, host) -> value, as the textfile collector would read them."""
    out = {}
    for family in text_string_to_metric_families(path.read_text()):
        for sample in family.samples:
            out[(sample.name, sample.labels["host"])] = sample.value
    return out


@pytest.fixture(scope="module")
def ca() -> CertAuthority:
    return CertAuthority()


@pytest.fixture(scope="module")
def expiring(ca: CertAuthority) -> Iterator[tuple[Edge, x509.Certificate]]:
    """The edge's nginx with a certificate for TEST_HOST that expires in two days (its API
    is not there: only the handshake matters)."""
    edge = Edge(f"127.0.0.1:{free_port()}")
    cert, cert_pem, key_pem = ca.issue((TEST_HOST,), valid_for=dt.timedelta(days=2))
    edge.install_certificate(cert_pem, key_pem)
    edge.start()
    yield edge, cert
    edge.remove()


@pytest.fixture
def other(ca: CertAuthority, tmp_path: Path) -> Iterator[tuple[TlsServer, x509.Certificate]]:
    """A second host, with 90 days left."""
    cert, cert_pem, key_pem = ca.issue((OTHER_HOST,), valid_for=dt.timedelta(days=90))
    server = TlsServer(cert_pem, key_pem, tmp_path)
    yield server, cert
    server.close()


@pytest.mark.parametrize(
    ("text", "connect", "expected"),
    [
        ("fleet.example.com", None, ("fleet.example.com", 443, "fleet.example.com", 443)),
        ("Fleet.Example.COM.", None, ("fleet.example.com", 443, "fleet.example.com", 443)),
        ("fleet.example.com:8443", None, ("fleet.example.com", 8443, "fleet.example.com", 8443)),
        ("fleet.example.com=127.0.0.1", None, ("fleet.example.com", 443, "127.0.0.1", 443)),
        ("fleet.example.com=127.0.0.1:9443", None, ("fleet.example.com", 443, "127.0.0.1", 9443)),
        ("fleet.example.com:8443=[::1]", None, ("fleet.example.com", 8443, "::1", 8443)),
        ("fleet.example.com", "127.0.0.2:1443", ("fleet.example.com", 443, "127.0.0.2", 1443)),
        ("a.example=127.0.0.3", "127.0.0.2", ("a.example", 443, "127.0.0.3", 443)),
        ("[::1]:8443", None, ("::1", 8443, "::1", 8443)),
    ],
)
def test_targets(text: str, connect: str | None, expected: tuple[str, int, str, int]) -> None:
    t = parse_target(text, connect)
    assert (t.host, t.port, t.address, t.address_port) == expected


def test_the_host_label_carries_a_port_other_than_443() -> None:
    assert parse_target("fleet.example.com=127.0.0.1:9443").label == "fleet.example.com"
    assert parse_target("fleet.example.com:8443").label == "fleet.example.com:8443"
    assert parse_target("[::1]:8443").label == "[::1]:8443"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "is not a host name"),
        ("fleet example", "is not a host name"),
        ("fleet.example.com:0", "port must be a number from 1 to 65535"),
        ("fleet.example.com:https", "port must be a number"),
        ("::1:443", "write an IPv6 address as [ADDRESS]:PORT"),
        ("[fleet.example.com]:443", "only IPv6 addresses go in brackets"),
        ("fleet.example.com=", "nothing after '='"),
        ("-fleet.example.com", "is not a host name"),
        ("fleet.example.com=10.0.0.1:99999", "port must be a number"),
    ],
)
def test_bad_targets(text: str, message: str) -> None:
    with pytest.raises(TargetError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_target(text)


def test_the_metric_is_the_one_the_alert_reads() -> None:
    rules = yaml.safe_load(
        (ROOT / "deploy" / "monitoring" / "prometheus" / "rules" / "alerts-app.yml").read_text()
    )
    exprs = [
        r["expr"]
        for group in rules["groups"]
        for r in group["rules"]
        if r.get("alert") == "CTAFleetTLSCertificateExpiring"
    ]
    assert len(exprs) == 2
    assert all(f"min by (host) ({metrics.EXPIRY.name})" in e for e in exprs)
    assert metrics.EXPIRY.labels == ("host",)


def test_check_writes_the_served_certificates_expiry(
    expiring: tuple[Edge, x509.Certificate], tmp_path: Path
) -> None:
    edge, cert = expiring
    prom = tmp_path / "textfile" / "ctafleet-certs.prom"
    result = run(f"{TEST_HOST}=127.0.0.1:{edge.https_port}", "--metrics-file", str(prom))
    assert result.exit_code == 0, result.output
    header, row = result.stdout.splitlines()
    assert header.split() == ["HOST", "EXPIRES", "(UTC)", "DAYS", "LEFT", "ISSUER"]
    assert row.split() == [
        TEST_HOST,
        f"{cert.not_valid_after_utc:%Y-%m-%d}",
        f"{cert.not_valid_after_utc:%H:%M:%S}",
        "2.0",
        "CTAFleet",
        "Test",
        "CA",
    ]
    assert samples(prom) == {
        (metrics.EXPIRY.name, TEST_HOST): cert.not_valid_after_utc.timestamp(),
        (metrics.CHECK_SUCCESS.name, TEST_HOST): 1.0,
    }
    assert prom.stat().st_mode & 0o777 == 0o644, "readable by node-exporter"
    # --connect: the same host reached through an address given once for all.
    result = run("--connect", f"127.0.0.1:{edge.https_port}", TEST_HOST)
    assert result.exit_code == 0, result.output
    assert TEST_HOST in result.stdout


def test_a_failed_host_keeps_its_last_value_and_spares_the_others(
    expiring: tuple[Edge, x509.Certificate],
    other: tuple[TlsServer, x509.Certificate],
    tmp_path: Path,
) -> None:
    edge, cert = expiring
    server, other_cert = other
    prom = tmp_path / "certs.prom"
    first = run(
        f"{TEST_HOST}=127.0.0.1:{edge.https_port}",
        f"{OTHER_HOST}=127.0.0.1:{server.port}",
        "gone.ctafleet.test=127.0.0.1:9",
        "--metrics-file",
        str(prom),
    )
    assert first.exit_code == 1, first.output
    assert samples(prom) == {
        (metrics.EXPIRY.name, TEST_HOST): cert.not_valid_after_utc.timestamp(),
        (metrics.EXPIRY.name, OTHER_HOST): other_cert.not_valid_after_utc.timestamp(),
        # Never read: no expiry at all, rather than a made-up one.
        (metrics.CHECK_SUCCESS.name, TEST_HOST): 1.0,
        (metrics.CHECK_SUCCESS.name, OTHER_HOST): 1.0,
        (metrics.CHECK_SUCCESS.name, "gone.ctafleet.test"): 0.0,
    }

    server.close()  # the second host goes away
    second = run(
        f"{TEST_HOST}=127.0.0.1:{edge.https_port}",
        f"{OTHER_HOST}=127.0.0.1:{server.port}",
        "--metrics-file",
        str(prom),
    )
    assert second.exit_code == 1
    assert f"error: {OTHER_HOST}: 127.0.0.1:{server.port} refused the connection" in second.stderr
    assert any(line.split()[:3] == [OTHER_HOST, "-", "-"] for line in second.stdout.splitlines())
    assert samples(prom) == {
        (metrics.EXPIRY.name, TEST_HOST): cert.not_valid_after_utc.timestamp(),
        (metrics.EXPIRY.name, OTHER_HOST): other_cert.not_valid_after_utc.timestamp(),
        (metrics.CHECK_SUCCESS.name, TEST_HOST): 1.0,
        (metrics.CHECK_SUCCESS.name, OTHER_HOST): 0.0,
        # gone.ctafleet.test was not named this time: it is no longer published.
    }


def test_a_server_without_tls(expiring: tuple[Edge, x509.Certificate], tmp_path: Path) -> None:
    edge, _cert = expiring
    prom = tmp_path / "certs.prom"
    result = run(f"{TEST_HOST}=127.0.0.1:{edge.http_port}", "--metrics-file", str(prom))
    assert result.exit_code == 1
    assert f"TLS handshake with 127.0.0.1:{edge.http_port} failed" in result.stderr
    assert samples(prom) == {(metrics.CHECK_SUCCESS.name, TEST_HOST): 0.0}


def test_a_certificate_for_another_name(expiring: tuple[Edge, x509.Certificate]) -> None:
    edge, _cert = expiring
    result = run(f"fleet.example.com=127.0.0.1:{edge.https_port}")
    assert result.exit_code == 1
    assert "is not for fleet.example.com (it names edge.ctafleet.test, 127.0.0.1)" in result.stderr
    # The address itself is a name the certificate carries.
    assert run(f"127.0.0.1:{edge.https_port}").exit_code == 0


def test_a_host_that_never_answers(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never speaks TLS
        port = silent.getsockname()[1]
        result = run(f"{TEST_HOST}=127.0.0.1:{port}", "--timeout", "0.5")
    assert result.exit_code == 1
    assert f"127.0.0.1:{port} did not answer within 0.5 s" in result.stderr


def test_nothing_is_sent_after_the_handshake(other: tuple[TlsServer, x509.Certificate]) -> None:
    server, _cert = other
    result = run(f"{OTHER_HOST}=127.0.0.1:{server.port}")
    assert result.exit_code == 0, result.output
    for _ in range(100):
        if server.received:
            break
        threading.Event().wait(0.05)
    assert server.handshakes == 1
    assert server.received == [b""], "no request, no data: only the handshake and its close"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["fleet example"], "is not a host name"),
        (["a.example", "A.example"], "a.example named more than once"),
        (["a.example", "--connect", "10.0.0.1:0"], "port must be a number"),
        (["a.example", "--metrics-file", "/tmp/certs.txt"], "reads only *.prom"),  # noqa: S108
    ],
)
def test_usage_errors(args: list[str], message: str) -> None:
    result = run(*args)
    assert result.exit_code == 2
    assert message in result.stderr
