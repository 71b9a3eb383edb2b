"""The one PostgreSQL connection-info parser (ctafleet.db.conninfo), in every accepted form,
and its renderings used against a real server."""

from __future__ import annotations

import asyncio
import os
import subprocess

import pytest
from sqlalchemy.engine import make_url

from ctafleet.db.conninfo import ConnInfo, ConnInfoError, redact
from tests.conftest import PgServer


def test_tcp_url_with_driver_and_encoded_credentials() -> None:
    info = ConnInfo.from_url("postgresql+asyncpg://app:p%40ss%3Aw%2Frd@db1:6432/ctafleet")
    assert (info.host, info.port, info.user, info.password, info.database) == (
        "db1", 6432, "app", "p@ss:w/rd", "ctafleet"
    )  # fmt: skip
    assert info.driver == "asyncpg"
    assert not info.is_socket
    assert "p@ss" not in repr(info)
    # SQLAlchemy reads back what it renders, password included.
    u = make_url(info.url())
    assert (u.drivername, u.username, u.password, u.host, u.port, u.database) == (
        "postgresql+asyncpg", "app", "p@ss:w/rd", "db1", 6432, "ctafleet"
    )  # fmt: skip
    assert ConnInfo.from_url(info.url()) == info


def test_socket_directory_and_port_as_query_parameters_override_the_authority() -> None:
    info = ConnInfo.from_url("postgres://postgres@ignored:1/postgres?host=/run/pg&port=5499")
    assert (info.host, info.port, info.is_socket) == ("/run/pg", 5499, True)
    assert ConnInfo.from_url(info.url()) == info
    assert make_url(info.url()).query == {"host": "/run/pg"}
    encoded = ConnInfo.from_url("postgresql://%2Fvar%2Frun%2Fpostgresql:5433/fleet")
    assert (encoded.host, encoded.port, encoded.database) == ("/var/run/postgresql", 5433, "fleet")
    named = ConnInfo.from_url("postgresql:///?dbname=fleet&user=ops&password=s3cret")
    assert (named.host, named.user, named.password, named.database) == (
        None, "ops", "s3cret", "fleet"
    )  # fmt: skip
    assert named.is_socket


def test_ipv6_defaults_and_other_parameters() -> None:
    info = ConnInfo.from_url("postgresql://[::1]:5433/db?sslmode=require&application_name=x")
    assert (info.host, info.port, info.sslmode) == ("::1", 5433, "require")
    assert info.params == (("sslmode", "require"), ("application_name", "x"))
    bare = ConnInfo.from_url("postgresql://")
    assert (bare.host, bare.port, bare.user, bare.database) == (None, None, None, None)
    filled = bare.with_defaults(user="postgres", port=5432, database="postgres")
    assert (filled.user, filled.port, filled.database) == ("postgres", 5432, "postgres")
    assert ConnInfo.from_url("postgresql://u@h/d?ssl=require").sslmode == "require"


def test_repointing_keeps_role_password_database_and_options() -> None:
    old = ConnInfo.from_url(
        "postgresql+asyncpg://ctafleet_app:s3cret@db1:5432/ctafleet?ssl=require"
    )
    assert old.with_server("db2", 5433).url() == (
        "postgresql+asyncpg://ctafleet_app:s3cret@db2:5433/ctafleet?ssl=require"
    )
    sock = ConnInfo.from_url("postgresql://u@/d?host=/run/pg&sslmode=disable")
    assert sock.with_server("db2", 5432).url() == "postgresql://u@db2:5432/d?sslmode=disable"


def test_libpq_environment_and_asyncpg_arguments() -> None:
    info = ConnInfo.from_url(
        "postgresql://app:pw@db1:6432/fleet?sslmode=verify-full&application_name=job"
        "&connect_timeout=7"
    )
    assert info.libpq_env() == {
        "PGHOST": "db1", "PGPORT": "6432", "PGUSER": "app", "PGPASSWORD": "pw",
        "PGDATABASE": "fleet", "PGSSLMODE": "verify-full", "PGAPPNAME": "job",
        "PGCONNECT_TIMEOUT": "7",
    }  # fmt: skip
    env = info.environ({"PATH": "/bin", "PGHOST": "elsewhere", "PGSERVICE": "x"})
    assert env["PGHOST"] == "db1"
    assert "PGSERVICE" not in env
    assert env["PATH"] == "/bin"
    assert info.asyncpg_kwargs() == {
        "host": "db1", "port": 6432, "user": "app", "password": "pw", "database": "fleet",
        "ssl": "verify-full", "timeout": 7.0,
    }  # fmt: skip
    assert ConnInfo.from_url("postgresql://h/d").asyncpg_kwargs() == {"host": "h", "database": "d"}


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sqlite:///data/ctafleet.db", "not a PostgreSQL URL"),
        ("mysql://root:hunter2@db/x", "not a PostgreSQL URL"),
        ("db1:5432/ctafleet", "no scheme"),
        ("postgresql://u:hunter2@db:notaport/x", "not a port number"),
        ("postgresql://u:hunter2@db/x?port=99999", "not a port number"),
        ("postgresql://u:hunter2@a:1,b:2/x", "several hosts"),
        ("postgresql://u:hunter2@[::1/x", "unclosed"),
    ],
)
def test_bad_urls_are_refused_without_showing_the_password(url: str, message: str) -> None:
    with pytest.raises(ConnInfoError, match=message) as err:
        ConnInfo.from_url(url)
    assert "hunter2" not in str(err.value)


def test_redact() -> None:
    assert redact("postgresql://u:pw@h:1/d?password=x&sslmode=require") == (
        "postgresql://u:***@h:1/d?password=***&sslmode=require"
    )
    assert redact("postgresql://h/d") == "postgresql://h/d"


@pytest.mark.postgres
def test_renderings_connect_to_a_real_server(pg_server: PgServer) -> None:
    import asyncpg

    info = ConnInfo.from_url(pg_server.admin_url).with_defaults(database="postgres")

    async def ask() -> str:
        conn = await asyncpg.connect(**info.asyncpg_kwargs())
        try:
            return str(await conn.fetchval("SELECT current_database()"))
        finally:
            await conn.close()

    assert asyncio.run(ask()) == info.database
    psql = subprocess.run(
        ["psql", "-XAtc", "SELECT current_database()"],
        env=info.environ(os.environ), capture_output=True, text=True, check=True, timeout=30,
    )  # fmt: skip
    assert psql.stdout.strip() == info.database
