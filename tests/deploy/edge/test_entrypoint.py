"""deploy/nginx/entrypoint.sh on its own: what it renders for each mode, and the values it
refuses, with a message naming the variable and a non-zero exit, before nginx ever starts."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kit.edge import EDGE_DIR, CertAuthority, Edge


@pytest.fixture
def edge(ca: CertAuthority) -> Iterator[Edge]:
    """A rendering-only edge (it is never started) with a certificate in place."""
    edge = Edge("127.0.0.1:8000")
    _cert, cert_pem, key_pem = ca.issue()
    edge.install_certificate(cert_pem, key_pem)
    yield edge
    edge.remove()


def render(edge: Edge, **env: str) -> tuple[int, str]:
    return edge.command("render", env={**edge.env(), **env})


def rendered(edge: Edge) -> str:
    """Every rendered file, concatenated."""
    files = sorted(edge.run_dir.rglob("*.conf"))
    return "\n".join(p.read_text() for p in files)


@pytest.mark.parametrize(
    "upstream",
    [
        "api",  # no port
        "api:",
        "api:0",
        "api:65536",
        "api:80a",
        "http://api:8000",
        "api:8000; include /etc/shadow",
        "api 8000",
        "api:8000\nserver evil:80",
        "fd00::5:8000",  # IPv6 without brackets
        "-api:8000",
    ],
)
def test_a_bad_upstream_is_refused(edge: Edge, upstream: str) -> None:
    code, output = render(edge, CTAFLEET_EDGE_UPSTREAM=upstream)
    assert code == 2, output
    assert "CTAFLEET_EDGE_UPSTREAM=" in output
    assert "is not HOST:PORT" in output
    assert not (edge.run_dir / "nginx.conf").exists(), "nothing rendered"


@pytest.mark.parametrize("upstream", ["127.0.0.1:8000", "[::1]:8000", "localhost:65535"])
def test_good_upstreams_render(edge: Edge, upstream: str) -> None:
    code, output = render(edge, CTAFLEET_EDGE_UPSTREAM=upstream)
    assert code == 0, output
    assert f"server {upstream};" in (edge.run_dir / "nginx.conf").read_text()


def test_tls_on_renders_the_redirect_and_https_servers(edge: Edge) -> None:
    code, output = render(edge, CTAFLEET_EDGE_PUBLIC_HTTPS_PORT="443")
    assert code == 0, output
    servers = sorted(p.name for p in (edge.run_dir / "servers").iterdir())
    assert servers == ["acme-redirect.conf", "https.conf"]
    text = rendered(edge)
    # Only the listed variables were substituted: nginx's own survive, none of ours is left.
    assert "${CTAFLEET_" not in text
    assert "return 301 https://$host$request_uri;" in text, "no port for the default 443"
    for variable in ("$remote_addr", "$request_id", "$http_upgrade", "$uri"):
        assert variable in text
    assert f"ssl_certificate {edge.tls_dir}/tls.crt;" in text
    assert f"root {edge.acme_root};" in text
    assert "client_max_body_size 1048576;" in text, "the API's default limit"
    assert "# OCSP stapling off" in text


def test_tls_off_renders_one_plain_server(edge: Edge) -> None:
    code, output = render(edge, CTAFLEET_EDGE_TLS="off", CTAFLEET_EDGE_TLS_DIR="/nonexistent")
    assert code == 0, output
    assert [p.name for p in (edge.run_dir / "servers").iterdir()] == ["plain.conf"]
    text = (edge.run_dir / "servers" / "plain.conf").read_text()
    assert "ssl" not in text
    assert "acme-challenge" not in text
    # Switching modes on the same run directory leaves no server of the other mode behind.
    assert render(edge)[0] == 0
    assert len(list((edge.run_dir / "servers").iterdir())) == 2


def test_the_upstream_is_resolved_at_start_by_default_or_again_and_again(edge: Edge) -> None:
    assert render(edge)[0] == 0
    text = rendered(edge)
    assert "proxy_pass http://ctafleet_api;" in text
    assert "resolver " not in text.replace("# OCSP", "")
    code, output = render(
        edge, CTAFLEET_EDGE_UPSTREAM_RESOLVE="dynamic", CTAFLEET_EDGE_RESOLVER="10.89.0.1"
    )
    assert code == 0, output
    text = rendered(edge)
    assert "resolver 10.89.0.1 valid=1s ipv6=off;" in text
    assert f"set $ctafleet_upstream {edge.upstream};" in text
    assert "proxy_pass http://$ctafleet_upstream;" in text
    assert "proxy_pass http://ctafleet_api;" not in text
    # Without a resolver named, the container's own DNS server (its /etc/resolv.conf).
    code, output = render(edge, CTAFLEET_EDGE_UPSTREAM_RESOLVE="dynamic")
    nameservers = [
        line.split()[1]
        for line in Path("/etc/resolv.conf").read_text().splitlines()
        if line.startswith("nameserver") and "." in line
    ]
    if nameservers:
        assert code == 0, output
        assert f"resolver {nameservers[0]} valid=1s" in rendered(edge)
    else:
        assert code == 2
        assert "no IPv4 nameserver in /etc/resolv.conf" in output


def test_tls_on_without_a_certificate_is_refused(edge: Edge) -> None:
    (edge.tls_dir / "tls.key").unlink()
    code, output = render(edge)
    assert code == 2
    assert f"{edge.tls_dir}/tls.key is missing" in output
    assert "CTAFLEET_EDGE_TLS=off" in output


def test_a_certificate_nginx_cannot_load_is_refused(edge: Edge) -> None:
    (edge.tls_dir / "tls.crt").write_text("not a certificate\n")
    code, output = render(edge)
    assert code == 2
    assert "nginx -t refused the configuration" in output
    assert "tls.crt" in output  # nginx's own message, above ours


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("CTAFLEET_EDGE_TLS", "yes", "must be on or off"),
        ("CTAFLEET_EDGE_HTTP_LISTEN", "eth0:8080", "is not [ADDR:]PORT"),
        ("CTAFLEET_EDGE_HTTP_LISTEN", "127.0.0.1:70000", "is not [ADDR:]PORT"),
        ("CTAFLEET_EDGE_HTTPS_LISTEN", "8443 ssl", "is not [ADDR:]PORT"),
        ("CTAFLEET_EDGE_PUBLIC_HTTPS_PORT", "https", "is not a port"),
        ("CTAFLEET_EDGE_TLS_DIR", "relative/tls", "is not an absolute path"),
        ("CTAFLEET_EDGE_ACME_ROOT", "/var/www/acme; root /", "is not an absolute path"),
        ("CTAFLEET_EDGE_RUN_DIR", "/run/a b", "is not an absolute path"),
        ("CTAFLEET_HTTP__MAX_BODY_BYTES", "1m", "must be bytes from 1024 to 104857600"),
        ("CTAFLEET_HTTP__MAX_BODY_BYTES", "999999999", "must be bytes from 1024 to 104857600"),
        ("CTAFLEET_EDGE_WORKERS", "0", "must be auto or a number"),
        ("CTAFLEET_EDGE_OCSP_STAPLING", "on", "needs CTAFLEET_EDGE_RESOLVER"),
        ("CTAFLEET_EDGE_UPSTREAM_RESOLVE", "always", "must be start or dynamic"),
        ("CTAFLEET_EDGE_RESOLVER", "dns.example.org", "is not an IP address[:port]"),
        ("CTAFLEET_TELEMETRY__BATCH_MAX_BODY_BYTES", "8m", "must be bytes from 1024"),
    ],
)
def test_bad_values_are_refused(edge: Edge, variable: str, value: str, message: str) -> None:
    code, output = render(edge, **{variable: value})
    assert code == 2, output
    assert f"ctafleet-edge: {variable}" in output
    assert message in output
    assert not (edge.run_dir / "nginx.conf").exists()


def test_ocsp_stapling_renders(edge: Edge, ca: CertAuthority) -> None:
    """Rendered and accepted by `nginx -t` only: pebble (and the test CA) run no OCSP
    responder, so whether nginx staples an answer is not tested here (docs/tls.md)."""
    bundle = edge.tls_dir / "ca.crt"
    bundle.write_bytes(ca.pem)
    bundle.chmod(0o644)
    code, output = render(
        edge,
        CTAFLEET_EDGE_OCSP_STAPLING="on",
        CTAFLEET_EDGE_RESOLVER="127.0.0.1 [::1]:53",
        CTAFLEET_EDGE_OCSP_TRUSTED_CA=str(bundle),
    )
    assert code == 0, output
    text = (edge.run_dir / "conf" / "ocsp-stapling.conf").read_text()
    assert "ssl_stapling on;" in text
    assert "ssl_stapling_verify on;" in text
    assert f"ssl_trusted_certificate {bundle};" in text
    assert "resolver 127.0.0.1 [::1]:53 valid=300s;" in text
    code, output = render(edge, CTAFLEET_EDGE_OCSP_STAPLING="on", CTAFLEET_EDGE_RESOLVER="dns")
    assert code == 2
    assert "'dns' is not an IP address" in output


def test_commands(edge: Edge) -> None:
    code, output = edge.command("reload")
    assert code == 2
    assert "nothing rendered" in output
    code, output = edge.command("start")
    assert code == 2
    assert "unknown command 'start'" in output


def test_templates_are_the_only_configuration() -> None:
    """Every file under deploy/nginx is either the entrypoint or a template the entrypoint
    renders; and every variable a template uses is one the entrypoint substitutes."""
    entrypoint = (EDGE_DIR / "entrypoint.sh").read_text()
    substituted = entrypoint.split("VARS='", 1)[1].split("'", 1)[0]
    listed = set(re.findall(r"\$\{(CTAFLEET_[A-Z_]+)\}", substituted))
    templates = sorted((EDGE_DIR / "templates").rglob("*.conf"))
    assert templates
    used: set[str] = set()
    for path in templates:
        used |= set(re.findall(r"\$\{(CTAFLEET_[A-Z_]+)\}", path.read_text()))
    assert used == listed
    files = {p.relative_to(EDGE_DIR).as_posix() for p in EDGE_DIR.rglob("*") if p.is_file()}
    assert files == {"entrypoint.sh"} | {p.relative_to(EDGE_DIR).as_posix() for p in templates}
    assert Path(EDGE_DIR / "entrypoint.sh").stat().st_mode & 0o111
