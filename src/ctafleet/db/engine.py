"""Engine and session factory for SQLite (embedded default) and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session, SessionTransaction

from ctafleet.config import Settings

TENANT_KEY = "tenant_id"
SCOPE_KEY = "scope"
SYSTEM_SCOPE = "system"


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def make_engine(url: str, settings: Settings | None = None, **kwargs: Any) -> AsyncEngine:
    if is_sqlite(url):
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
    if settings is not None:
        kwargs.setdefault("pool_size", settings.database.pool_size)
        kwargs.setdefault("max_overflow", settings.database.max_overflow)
        kwargs.setdefault("echo", settings.database.echo)
    kwargs.setdefault("pool_pre_ping", True)
    return create_async_engine(url, **kwargs)


@event.listens_for(Session, "after_begin")
def _set_rls_scope(session: Session, _tx: SessionTransaction, connection: Connection) -> None:
    """Each PostgreSQL transaction carries the tenant (or system) scope that RLS reads."""
    if connection.dialect.name != "postgresql":
        return
    tenant = session.info.get(TENANT_KEY)
    scope = session.info.get(SCOPE_KEY, "")
    connection.execute(
        text(
            "SELECT set_config('ctafleet.tenant_id', :t, true), "
            "set_config('ctafleet.scope', :s, true)"
        ),
        {"t": str(tenant) if tenant else "", "s": scope},
    )


class Database:
    """One per process: the engine and sessions bound to a tenant or to the system scope."""

    def __init__(self, url: str, settings: Settings | None = None) -> None:
        self.url = url
        self.engine = make_engine(url, settings)
        self._factory = async_sessionmaker(self.engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def session(self, tenant_id: uuid.UUID | None = None, *, system: bool = False) -> AsyncSession:
        session = self._factory()
        if tenant_id is not None:
            session.info[TENANT_KEY] = tenant_id
        if system:
            session.info[SCOPE_KEY] = SYSTEM_SCOPE
        return session

    @asynccontextmanager
    async def system_session(self) -> AsyncIterator[AsyncSession]:
        """For the few deliberately cross-tenant reads: login, token refresh, device auth."""
        async with self.session(system=True) as session:
            yield session

    @asynccontextmanager
    async def tenant_session(self, tenant_id: uuid.UUID) -> AsyncIterator[AsyncSession]:
        async with self.session(tenant_id) as session:
            yield session

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        await self.engine.dispose()
