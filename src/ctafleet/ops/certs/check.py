"""Read the certificate a host serves: a TLS handshake and nothing else.

The hosts are the operator's (named on the command line), so any address may be reached; but
no request is ever sent: the connection is closed right after the handshake, so nothing is
followed or redirected and the server sees no data. Trust is not checked (an expired or
self-signed certificate still has a date worth reporting; the black-box probe judges trust),
but the certificate must name the host: another one's expiry would say nothing about it.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
import socket
import ssl
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import NameOID

DEFAULT_PORT = 443
_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")


class TargetError(ValueError):
    """A target the operator wrote that cannot be read (a usage error)."""


class CheckError(Exception):
    """The host could not be checked: unreachable, no TLS, or a certificate for another name."""


@dataclass(frozen=True)
class Target:
    host: str  # the name clients use: sent as SNI, and the name the certificate must carry
    port: int
    address: str  # where to connect (the host itself unless told otherwise)
    address_port: int

    @property
    def label(self) -> str:
        """The `host` label of the metric: the name, with the port when it is not 443."""
        if self.port == DEFAULT_PORT:
            return self.host
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def route(self) -> str:
        address = f"[{self.address}]" if ":" in self.address else self.address
        return f"{address}:{self.address_port}"


@dataclass(frozen=True)
class Certificate:
    target: Target
    not_after: dt.datetime
    issuer: str
    subject: str
    serial: int

    def days_left(self, now: dt.datetime) -> float:
        return (self.not_after - now).total_seconds() / 86400


def _host(text: str, what: str) -> str:
    """A DNS name or an IP address, normalised (lower case, no trailing dot)."""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    name = text.lower().removesuffix(".")
    if not name or len(name) > 253 or not all(_LABEL.fullmatch(p) for p in name.split(".")):
        raise TargetError(f"{what} {text!r} is not a host name or an IP address")
    return name


def _host_port(text: str, what: str) -> tuple[str, int | None]:
    """`HOST`, `HOST:PORT`, `[IPV6]` or `[IPV6]:PORT`."""
    port: str | None = None
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise TargetError(f"{what} {text!r}: write an IPv6 address as [ADDRESS]:PORT")
        port = rest[1:] if rest else None
        if ":" not in host:
            raise TargetError(f"{what} {text!r}: only IPv6 addresses go in brackets")
    elif text.count(":") == 1:
        host, port = text.split(":")
    elif ":" in text:
        raise TargetError(f"{what} {text!r}: write an IPv6 address as [ADDRESS]:PORT")
    else:
        host = text
    if port is None:
        return _host(host, what), None
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise TargetError(f"{what} {text!r}: the port must be a number from 1 to 65535")
    return _host(host, what), int(port)


def parse_target(text: str, connect: str | None = None) -> Target:
    """`HOST[:PORT][=ADDRESS[:PORT]]`: check HOST (its certificate, with HOST as SNI) at
    ADDRESS, else at `connect`, else at HOST itself. The port defaults to HOST's, then 443."""
    name, sep, route = text.partition("=")
    if sep and not route:
        raise TargetError(f"target {text!r}: nothing after '='")
    host, port = _host_port(name, "host")
    route = route or connect or ""
    address, address_port = _host_port(route, "address") if route else (host, None)
    port = port or DEFAULT_PORT
    return Target(host=host, port=port, address=address, address_port=address_port or port)


def _names(cert: x509.Certificate) -> list[str]:
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [n.lower() for n in sans.get_values_for_type(x509.DNSName)] + [
        str(ip) for ip in sans.get_values_for_type(x509.IPAddress)
    ]


def _covers(pattern: str, host: str) -> bool:
    """RFC 6125: an exact match, or a wildcard standing for the whole leftmost label."""
    if pattern == host:
        return True
    if pattern.startswith("*.") and "." in host:
        return host.split(".", 1)[1] == pattern[2:] and not _is_ip(host)
    return False


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _issuer(cert: x509.Certificate) -> str:
    """The issuer's organisation and common name, as short as is useful in a table."""
    parts = [
        str(a.value)
        for oid in (NameOID.ORGANIZATION_NAME, NameOID.COMMON_NAME)
        for a in cert.issuer.get_attributes_for_oid(oid)
    ]
    return " ".join(dict.fromkeys(parts)) or cert.issuer.rfc4514_string()


def fetch(target: Target, timeout: float) -> Certificate:
    """The leaf certificate the target serves for its name."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # reading it, not trusting it (see the module doc)
    sni = None if _is_ip(target.host) else target.host
    try:
        with (
            socket.create_connection((target.address, target.address_port), timeout) as sock,
            context.wrap_socket(sock, server_hostname=sni) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
    except socket.gaierror as exc:
        raise CheckError(f"cannot resolve {target.address}: {exc.strerror}") from None
    except ssl.SSLError as exc:
        raise CheckError(f"TLS handshake with {target.route} failed: {exc.reason or exc}") from None
    except TimeoutError:
        raise CheckError(f"{target.route} did not answer within {timeout:g} s") from None
    except ConnectionRefusedError:
        raise CheckError(f"{target.route} refused the connection") from None
    except OSError as exc:
        raise CheckError(f"cannot connect to {target.route}: {exc.strerror or exc}") from None
    if not der:
        raise CheckError(f"{target.route} sent no certificate")
    cert = x509.load_der_x509_certificate(der)
    names = _names(cert)
    if not any(_covers(n, target.host) for n in names):
        shown = ", ".join(names) or "no names"
        raise CheckError(
            f"the certificate {target.route} serves is not for {target.host} (it names {shown})"
        )
    return Certificate(
        target=target,
        not_after=cert.not_valid_after_utc,
        issuer=_issuer(cert),
        subject=cert.subject.rfc4514_string(),
        serial=cert.serial_number,
    )
