"""Outbound requests to identity providers: the addresses are chosen by tenant admins, so the
server refuses to reach private, loopback, link-local and other non-public addresses (SSRF)
unless the operator lists the network (`oidc.allowed_networks`).

The check is made on the addresses the connection actually uses: the host name is resolved
once, every address it resolves to is checked, and the connection goes to a checked address
(a name that resolves to a public address for the check and a private one for the connection
cannot slip through). TLS still verifies the certificate against the host name.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Sequence
from typing import Any

import anyio
import httpcore
import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class AddressRefused(httpx.TransportError):
    """The provider's address is not one the server may reach."""


def networks(cidrs: Iterable[str]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


def address_allowed(address: IPAddress, allowed: Sequence[IPNetwork]) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    if any(address in network for network in allowed):
        return True
    return address.is_global and not address.is_multicast


def loopback_allowed(allowed: Sequence[IPNetwork]) -> bool:
    return any(ipaddress.ip_address("127.0.0.1") in n for n in allowed)


def literal_address(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def is_loopback_host(host: str) -> bool:
    address = literal_address(host)
    return host == "localhost" or (address is not None and address.is_loopback)


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend with the address check before every TCP connection."""

    def __init__(self, allowed: Sequence[IPNetwork], resolve_timeout_s: float) -> None:
        self._inner = httpcore.AnyIOBackend()
        self._allowed = tuple(allowed)
        self._resolve_timeout_s = resolve_timeout_s

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            with anyio.fail_after(self._resolve_timeout_s):
                infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, TimeoutError) as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
        refused = [a for a in addresses if not address_allowed(a, self._allowed)]
        if not addresses or refused:
            # Any refused address refuses the host: no choosing among mixed answers.
            raise AddressRefused(
                f"{host} resolves to {refused[0] if refused else 'nothing'}, which is not a "
                "public address (allow its network with CTAFLEET_OIDC__ALLOWED_NETWORKS)"
            )
        return await self._inner.connect_tcp(
            str(addresses[0]),
            port,
            timeout=timeout,
            local_address=local_address,
            socket_options=socket_options,
        )

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise AddressRefused("unix sockets are not providers")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport on the guarded backend; no proxies, no retries."""

    def __init__(self, allowed: Sequence[IPNetwork], timeout_s: float) -> None:
        super().__init__(trust_env=False)
        # httpx builds its connection pool without a way to pass a network backend: the pool
        # is built again, with the same defaults, on the guarded one.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            max_connections=10,
            max_keepalive_connections=0,
            network_backend=GuardedBackend(allowed, timeout_s),
        )
