"""Engine and sessions for SQLite (embedded default) and PostgreSQL."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
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


def make_engine(url: str, settings: Settings | None = None, **kwargs: Any) -> AsyncEngine:
    if settings is not None:
        kwargs.setdefault("pool_size", settings.database.pool_size)
        kwargs.setdefault("max_overflow", settings.database.max_overflow)
        if settings.database.echo:
            # Through the application's log handler (JSON, once), not SQLAlchemy's own stream
            # handler that `echo=True` adds beside it.
            logging.getLogger("sqlalchemy.engine.Engine").setLevel(logging.INFO)
    # Bound parameters hold password hashes, TOTP secrets and credential digests: SQLAlchemy
    # never puts them in a log line or an exception message, at any log level.
    kwargs.setdefault("hide_parameters", True)
    if is_sqlite(url):
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
    kwargs.setdefault("pool_pre_ping", True)
    return create_async_engine(url, **kwargs)


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

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        await self.engine.dispose()
