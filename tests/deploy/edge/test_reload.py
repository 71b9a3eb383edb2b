"""`entrypoint.sh reload`, the certificate deploy hook's last step: a new certificate is served
without a restart, and one nginx cannot load is refused while the old one stays served."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest
from cryptography import x509

from tests.deploy.edge.kit import s_client
from tests.kit.edge import CertAuthority, Edge
from tests.kit.net import free_port


@pytest.fixture
def edge(ca: CertAuthority) -> Iterator[Edge]:
    edge = Edge(f"127.0.0.1:{free_port()}")
    _cert, cert_pem, key_pem = ca.issue()
    edge.install_certificate(cert_pem, key_pem)
    edge.start()
    yield edge
    edge.remove()


def served_serial(edge: Edge) -> int:
    result = s_client(edge)
    assert result.returncode == 0, result.stderr
    pem = subprocess.run(
        ["openssl", "x509"], input=result.stdout, capture_output=True, text=True, check=True
    ).stdout
    return x509.load_pem_x509_certificate(pem.encode()).serial_number


def test_reload_serves_a_new_certificate(edge: Edge, ca: CertAuthority) -> None:
    master = edge.proc.pid if edge.proc else None
    renewed, cert_pem, key_pem = ca.issue()
    assert served_serial(edge) != renewed.serial_number
    edge.install_certificate(cert_pem, key_pem)
    edge.reload()
    assert served_serial(edge) == renewed.serial_number
    assert edge.proc is not None
    assert edge.proc.pid == master
    assert edge.proc.poll() is None, "reloaded, not restarted"


def test_a_certificate_that_does_not_load_is_refused(edge: Edge, ca: CertAuthority) -> None:
    before = served_serial(edge)
    _other, _other_pem, other_key = ca.issue()
    _cert, cert_pem, _key = ca.issue()
    edge.install_certificate(cert_pem, other_key)  # a key that does not match the certificate
    code, output = edge.command("reload")
    assert code == 2
    assert "nginx -t refused the configuration" in output
    assert "key values mismatch" in output  # nginx's own reason, above ours
    assert served_serial(edge) == before, "the previous certificate is still served"
    assert edge.proc is not None
    assert edge.proc.poll() is None
