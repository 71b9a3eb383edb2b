"""A real ACME flow through the edge: scripts/acme-smoke.sh (pebble, certbot over HTTP-01
through the edge's webroot, a forced renewal, the deploy hook reloading nginx), run as an
operator runs it; then its evidence is checked here again, independently of the script's own
checks: both served chains verify up to pebble's root, and the renewal is a new certificate
for the same name."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from cryptography import x509

from tests.conftest import service_unavailable
from tests.kit.edge import ROOT, as_root
from tests.kit.tools import tool

SCRIPT = ROOT / "scripts" / "acme-smoke.sh"
DOMAIN = "ctafleet.test"


def chain(path: Path) -> list[x509.Certificate]:
    certs = x509.load_pem_x509_certificates(path.read_bytes())
    assert len(certs) >= 2, f"{path.name}: leaf and intermediate expected"
    return certs


def verify_up_to(root: x509.Certificate, certs: list[x509.Certificate]) -> None:
    for child, parent in zip(certs, [*certs[1:], root], strict=True):
        child.verify_directly_issued_by(parent)


@pytest.mark.slow
def test_acme_issue_renew_and_reload_through_the_edge(tmp_path: Path) -> None:
    if not as_root():
        service_unavailable("the ACME flow needs root (a private network namespace)")
    for name in ("pebble", "pebble-challtestsrv", "certbot", "nginx", "openssl", "curl", "unshare"):
        tool(name)
    out = tmp_path / "evidence"
    started = time.monotonic()
    result = subprocess.run(
        [str(SCRIPT)],
        env={**os.environ, "ACME_SMOKE_OUT": str(out), "ACME_SMOKE_DOMAIN": DOMAIN},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    took = time.monotonic() - started
    assert result.returncode == 0, result.stdout + result.stderr
    assert "acme-smoke: OK" in result.stdout
    assert took < 120, f"the ACME flow took {took:.0f} s (certbot's random sleep?)"

    root = x509.load_pem_x509_certificate((out / "pebble-root.pem").read_bytes())
    issued, renewed = chain(out / "served-issued.pem"), chain(out / "served-renewed.pem")
    for served in (issued, renewed):
        verify_up_to(root, served)
        names = served[0].extensions.get_extension_for_class(x509.SubjectAlternativeName)
        assert names.value.get_values_for_type(x509.DNSName) == [DOMAIN]
    assert issued[0].serial_number != renewed[0].serial_number
    assert issued[0].public_key() != renewed[0].public_key(), "certbot made a new key"
    assert renewed[0].not_valid_before_utc >= issued[0].not_valid_before_utc
    for label in ("issued", "renewed"):
        headers = (out / f"headers-{label}.txt").read_text().lower()
        assert "strict-transport-security: max-age=63072000; includesubdomains" in headers
