"""Engine and sessions for SQLite (embedded default) and PostgreSQL."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from ctafleet.config import Settings
from ctafleet.db import scope, sqlite
from ctafleet.kernel.context import Actor


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


PG_POOL, PG_OVERFLOW = 10, 10
# SQLite writes one transaction at a time, and each connection is a thread of its own competing
# for the GIL: two connections (a writer and a reader) serve best; more only contend.
SQLITE_POOL = 2


def make_engine(url: str, settings: Settings | None = None, **kwargs: Any) -> AsyncEngine:
    sqlite_url = is_sqlite(url)
    if settings is not None:
        pool_size, max_overflow = settings.database.pool_size, settings.database.max_overflow
        kwargs.setdefault("pool_size", pool_size or (SQLITE_POOL if sqlite_url else PG_POOL))
        if max_overflow is None:
            max_overflow = 0 if sqlite_url else PG_OVERFLOW
        kwargs.setdefault("max_overflow", max_overflow)
        # Statements go through the application's log handler (JSON, once), not SQLAlchemy's
        # own stream handler that `echo=True` adds beside it.
        logging.getLogger("sqlalchemy.engine.Engine").setLevel(
            logging.INFO if settings.database.echo else logging.WARNING
        )
    # Bound parameters hold password hashes, TOTP secrets and credential digests: SQLAlchemy
    # never puts them in a log line or an exception message, at any log level.
    kwargs.setdefault("hide_parameters", True)
    if sqlite_url:
        sqlite.install()
        database = make_url(url).database
        if database and database != ":memory:":
            # Owner-only: the database holds password hashes and credential digests.
            Path(database).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 30}, **kwargs)

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    ping_after = settings.database.ping_after_idle_s if settings is not None else 0.0
    kwargs.setdefault("pool_pre_ping", ping_after == 0)
    engine = create_async_engine(url, **kwargs)
    if ping_after > 0 and not kwargs["pool_pre_ping"]:
        _ping_when_idle(engine, ping_after)
    return engine


def _ping_when_idle(engine: AsyncEngine, idle_s: float) -> None:
    """Checks a pooled connection before use only when it has been idle for `idle_s`.

    A ping on every checkout (`pool_pre_ping`) is a round trip on every request. A connection
    in steady use is checked by use itself (a dead one fails its query and the pool discards
    it and the others opened before it); one left idle long enough for the server or a
    firewall to have dropped it is pinged first, and replaced if the ping fails.
    """

    @event.listens_for(engine.sync_engine, "checkin")
    def _checkin(_dbapi_conn: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("idle_since")
        if since is None or time.monotonic() - since < idle_s:
            return
        try:
            dbapi_conn.ping()
        except Exception as exc:
            raise DisconnectionError("connection dropped while idle") from exc


class Database:
    """One per process: the engine, and sessions bound to an actor's tenant or to the system."""

    def __init__(self, url: str, settings: Settings | None = None) -> None:
        self.url = url
        self.engine = make_engine(url, settings)
        self._factory = async_sessionmaker(self.engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def session(self, actor: Actor) -> AsyncSession:
        """A session that sees and writes only the actor's tenant (see `db/scope.py`)."""
        session = self._factory()
        scope.bind(session, actor)
        return session

    def system_session(self) -> AsyncSession:
        """For the few deliberately cross-tenant operations: login, token refresh, device
        authentication, platform commands (tenants create)."""
        return scope.system_session(self.engine)

    async def dispose(self) -> None:
        await self.engine.dispose()
