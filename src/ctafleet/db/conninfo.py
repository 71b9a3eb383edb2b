"""PostgreSQL connection info: one parser for the URLs CTAFleet is configured with.

Accepts libpq URIs (`postgresql://` or `postgres://`) and SQLAlchemy URLs with a driver
(`postgresql+asyncpg://`). As in libpq, values are percent-decoded, query parameters override
the authority part (`?host=/run/postgresql&port=5433` names a Unix-socket directory and its
port), and a host that starts with `/` is a socket directory. Whatever else the query holds
(`sslmode`, `application_name`, asyncpg's `ssl`...) is kept as is.

Renders to a SQLAlchemy URL, to libpq environment variables (for pg_dump and friends: a
password on a command line would show in `ps`) and to asyncpg's keyword arguments.
Framework-free; fields left out of the URL stay None, so each caller applies its own
defaults (`with_defaults`). No message of this module contains a password.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import unquote

from sqlalchemy.engine import URL

__all__ = ["ConnInfo", "ConnInfoError", "redact"]

_SCHEMES = ("postgresql", "postgres")
# Query parameters that are fields of ConnInfo (libpq names).
_FIELDS = {"host": "host", "port": "port", "user": "user", "password": "password"}
_DATABASE_PARAMS = ("dbname", "database")
# libpq parameter -> environment variable (the ones a deployment plausibly sets).
_LIBPQ_ENV = {
    "sslmode": "PGSSLMODE",
    "sslrootcert": "PGSSLROOTCERT",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "sslcrl": "PGSSLCRL",
    "application_name": "PGAPPNAME",
    "connect_timeout": "PGCONNECT_TIMEOUT",
    "options": "PGOPTIONS",
    "target_session_attrs": "PGTARGETSESSIONATTRS",
    "channel_binding": "PGCHANNELBINDING",
    "gssencmode": "PGGSSENCMODE",
    "passfile": "PGPASSFILE",
    "service": "PGSERVICE",
}
_SSL_MODES = {"disable", "allow", "prefer", "require", "verify-ca", "verify-full"}


class ConnInfoError(ValueError):
    """The URL is not a usable PostgreSQL URL; the message holds no password."""


def redact(url: str) -> str:
    """The URL with any password replaced by ***, for messages."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "(not a URL)"
    authority, slash, tail = rest.partition("/")
    if "@" in authority:
        userinfo, _, hostport = authority.rpartition("@")
        user = userinfo.split(":", 1)[0]
        authority = f"{user}:***@{hostport}" if ":" in userinfo else f"{user}@{hostport}"
    parts = []
    path, question, query = tail.partition("?")
    for item in query.split("&") if question else []:
        name = item.split("=", 1)[0]
        parts.append(f"{name}=***" if name == "password" else item)
    return f"{scheme}://{authority}{slash}{path}" + (f"?{'&'.join(parts)}" if question else "")


def _port(value: str, url: str) -> int:
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise ConnInfoError(f"port {value!r} is not a port number in {redact(url)}")
    return int(value)


@dataclass(frozen=True)
class ConnInfo:
    host: str | None = None  # TCP host, or a Unix-socket directory (starts with /)
    port: int | None = None
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    database: str | None = None
    params: tuple[tuple[str, str], ...] = ()  # other query parameters, in order
    driver: str | None = None  # the SQLAlchemy driver the URL named (asyncpg, psycopg...)

    @classmethod
    def from_url(cls, url: str) -> ConnInfo:
        scheme, sep, rest = url.strip().partition("://")
        base, _, driver = scheme.lower().partition("+")
        if not sep or base not in _SCHEMES:
            shown = f"scheme {scheme!r}" if sep else "no scheme"
            raise ConnInfoError(f"not a PostgreSQL URL ({shown}); expected postgresql://...")
        rest = rest.partition("#")[0]
        authority_path, _, query = rest.partition("?")
        authority, _, path = authority_path.partition("/")
        values: dict[str, Any] = {}
        userinfo, at, hostport = authority.rpartition("@")
        if at:
            user, colon, password = userinfo.partition(":")
            values["user"] = unquote(user) or None
            if colon:
                values["password"] = unquote(password)
        if "," in hostport:
            raise ConnInfoError(f"several hosts are not supported: {redact(url)}")
        host, port = hostport, ""
        if hostport.startswith("["):  # IPv6 literal
            end = hostport.find("]")
            if end < 0:
                raise ConnInfoError(f"unclosed [ in the host of {redact(url)}")
            host, port = hostport[1:end], hostport[end + 1 :].removeprefix(":")
        elif ":" in hostport:
            host, port = hostport.rsplit(":", 1)
        values["host"] = unquote(host) or None
        if port:
            values["port"] = _port(port, url)
        values["database"] = unquote(path) or None
        params: list[tuple[str, str]] = []
        for item in query.split("&") if query else []:
            if not item:
                continue
            name, _, raw = item.partition("=")
            name, value = unquote(name), unquote(raw)
            if name in _FIELDS:
                values[name] = _port(value, url) if name == "port" else (value or None)
            elif name in _DATABASE_PARAMS:
                values["database"] = value or None
            else:
                params.append((name, value))
        return cls(**values, params=tuple(params), driver=driver or None)

    # --- reading and changing -----------------------------------------------------------

    @property
    def is_socket(self) -> bool:
        return self.host is None or self.host.startswith("/")

    def param(self, name: str) -> str | None:
        found = [v for k, v in self.params if k == name]
        return found[-1] if found else None

    @property
    def sslmode(self) -> str | None:
        """libpq's sslmode, or asyncpg's `ssl` when it names a mode."""
        mode = self.param("sslmode") or self.param("ssl")
        return mode if mode in _SSL_MODES else None

    def with_defaults(self, **defaults: Any) -> ConnInfo:
        """Fill the fields the URL left out."""
        return replace(self, **{k: v for k, v in defaults.items() if getattr(self, k) is None})

    def with_database(self, database: str) -> ConnInfo:
        return replace(self, database=database)

    def with_server(self, host: str, port: int | None) -> ConnInfo:
        """The same role, password, database and options on another server."""
        return replace(self, host=host, port=port)

    def describe(self) -> str:
        """user@host:port/database, without the password."""
        return (
            f"{self.user or '(default user)'}@{self.host or '(default socket)'}:"
            f"{self.port or 5432}/{self.database or '(default database)'}"
        )

    # --- rendering ---------------------------------------------------------------------

    def sqlalchemy_url(self, driver: str | None = None) -> URL:
        """A SQLAlchemy URL (render_as_string(hide_password=False) for a string); a socket
        directory goes in the query, where libpq, asyncpg and psycopg all read it."""
        driver = driver if driver is not None else self.driver
        query: dict[str, str] = dict(self.params)
        if self.host is not None and self.is_socket:
            query["host"] = self.host
        return URL.create(
            f"postgresql+{driver}" if driver else "postgresql",
            username=self.user,
            password=self.password,
            host=None if self.is_socket else self.host,
            port=self.port,
            database=self.database,
            query=query,
        )

    def url(self, driver: str | None = None, *, hide_password: bool = False) -> str:
        return self.sqlalchemy_url(driver).render_as_string(hide_password=hide_password)

    def libpq_env(self) -> dict[str, str]:
        """PG* variables for libpq tools: nothing secret on their command line."""
        env = {
            "PGHOST": self.host,
            "PGPORT": str(self.port) if self.port else None,
            "PGUSER": self.user,
            "PGPASSWORD": self.password,
            "PGDATABASE": self.database,
        }
        for name, value in self.params:
            if name in _LIBPQ_ENV:
                env[_LIBPQ_ENV[name]] = value
        if self.sslmode:
            env["PGSSLMODE"] = self.sslmode
        return {k: v for k, v in env.items() if v}

    def environ(self, base: Mapping[str, str]) -> dict[str, str]:
        """`base` without its own PG* variables (they would mix with these), plus these."""
        env = {k: v for k, v in base.items() if not k.startswith("PG")}
        env.update(self.libpq_env())
        return env

    def asyncpg_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of asyncpg.connect(); fields left out stay asyncpg's defaults."""
        kwargs: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": self.password,
            "database": self.database,
        }
        if self.sslmode:
            kwargs["ssl"] = self.sslmode
        timeout = self.param("connect_timeout")
        if timeout and timeout.isdigit():
            kwargs["timeout"] = float(timeout)
        return {k: v for k, v in kwargs.items() if v is not None}
