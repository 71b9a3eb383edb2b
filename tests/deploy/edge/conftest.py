"""The edge in front of a real `ctafleet serve`, both on loopback, started once per session."""

from __future__ import annotations

import ssl
from collections.abc import Iterator

import pytest

from tests.deploy.edge.kit import ADMIN, BODY_LIMITS, PASSWORD, ProxiedApi, started_edge
from tests.kit.edge import CertAuthority, Edge


@pytest.fixture(scope="session")
def ca() -> CertAuthority:
    return CertAuthority()


@pytest.fixture(scope="session")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxiedApi]:
    api = ProxiedApi(
        tmp_path_factory.mktemp("edge-api"),
        env_extra={
            "CTAFLEET_OBSERVABILITY__LOG_LEVEL": "INFO",
            "CTAFLEET_OBSERVABILITY__LOG_JSON": "true",
            **BODY_LIMITS,
        },
    )
    api.cli("db", "upgrade")
    api.cli("tenants", "create", "edge")
    api.cli(
        "users", "create", "--tenant", "edge", "--email", ADMIN, "--role", "admin",
        stdin=PASSWORD + "\n",
    )  # fmt: skip
    api.start()
    yield api
    api.stop()


@pytest.fixture(scope="session")
def edge(api: ProxiedApi, ca: CertAuthority) -> Iterator[Edge]:
    """TLS terminated at the edge (compose)."""
    edge = started_edge(f"127.0.0.1:{api.port}", ca)
    yield edge
    edge.remove()


@pytest.fixture(scope="session")
def plain_edge(api: ProxiedApi, ca: CertAuthority) -> Iterator[Edge]:
    """TLS terminated by an ingress in front (Kubernetes)."""
    edge = started_edge(f"127.0.0.1:{api.port}", ca, tls=False)
    yield edge
    edge.remove()


@pytest.fixture(scope="session")
def tls_context(ca: CertAuthority) -> ssl.SSLContext:
    return ssl.create_default_context(cadata=ca.pem.decode())
