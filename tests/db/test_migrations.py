"""One migration history for SQLite and PostgreSQL: up, down, up again, and no drift from models."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path
from typing import Any

from sqlalchemy import inspect

from ctafleet.db.base import Base, tenant_owned_tables
from ctafleet.db.engine import make_engine
from ctafleet.db.migrate import MIGRATIONS, downgrade, drift, head_revision, revision_of, upgrade
from ctafleet.domains import metadata
from tests.kit.app import PgDatabase


async def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
    finally:
        await engine.dispose()


async def _round_trip(url: str, app_role: str = "") -> None:
    head = head_revision()
    assert head is not None
    assert await revision_of(url) is None

    assert await upgrade(url, app_role=app_role) == head
    assert await revision_of(url) == head
    assert await drift(url, metadata()) == []
    model_tables = set(Base.metadata.tables)
    assert model_tables <= await _tables(url)

    await downgrade(url, "base")
    assert await revision_of(url) is None
    assert await _tables(url) <= {"alembic_version"}

    assert await upgrade(url, app_role=app_role) == head
    assert await drift(url, metadata()) == []
    # Upgrading a database already at head changes nothing.
    assert await upgrade(url, app_role=app_role) == head
    assert await drift(url, metadata()) == []


async def test_sqlite_round_trip(tmp_path: Path) -> None:
    await _round_trip(f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}")


def test_postgres_round_trip(fresh_pg: Any) -> None:
    # Sync: the fixture's factory runs its own event loop to create the database.
    pg: PgDatabase = fresh_pg()
    asyncio.run(_round_trip(pg.owner_url, app_role=pg.app_role))


async def test_drift_check_notices_a_model_change(tmp_path: Path) -> None:
    """The drift check is not vacuous: a column the migrations lack is reported."""
    from sqlalchemy import Column, String

    url = f"sqlite+aiosqlite:///{tmp_path / 'drift.db'}"
    await upgrade(url)
    column = Column("drift_probe", String(8), nullable=True)
    table = Base.metadata.tables["vehicles"]
    table.append_column(column)
    try:
        diffs = await drift(url, metadata())
    finally:
        table._columns.remove(column)
    assert any("drift_probe" in str(d) for d in diffs), diffs
    assert await drift(url, metadata()) == []


def _migration_tenant_tables() -> set[str]:
    """TENANT_TABLES of every migration file (each lists the tables it puts under RLS).

    Read by importing each file as alembic does, not with `ast.parse`: on this CPython 3.11.2
    `ast.parse` once failed a CI run with "SystemError: AST constructor recursion depth
    mismatch", raised while turning the parsed tree into Python objects, which an import
    never does."""
    found: set[str] = set()
    for path in sorted((MIGRATIONS / "versions").glob("*.py")):
        spec = importlib.util.spec_from_file_location(f"_migration_{path.stem}", path)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        found |= set(getattr(module, "TENANT_TABLES", ()))
    return found


def test_every_tenant_owned_table_gets_row_level_security_in_a_migration() -> None:
    missing = set(tenant_owned_tables()) - _migration_tenant_tables()
    assert not missing, f"enable RLS (ctafleet.db.rls.enable_sql) in a migration for {missing}"


def test_one_head() -> None:
    from alembic.script import ScriptDirectory

    from ctafleet.db.migrate import alembic_config

    heads = ScriptDirectory.from_config(alembic_config()).get_heads()
    assert len(heads) == 1, f"branched migration history: {heads}"
