"""Alembic driven from code: upgrade, current revision, head, model/migration drift."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from ctafleet.db import rls
from ctafleet.db.engine import make_engine

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def _current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as conn:
        return await conn.run_sync(_current)


async def _run(url: str, fn: Any, *args: Any) -> Any:
    engine = make_engine(url)
    try:
        async with engine.begin() as conn:
            return await conn.run_sync(fn, *args)
    finally:
        await engine.dispose()


def _upgrade(connection: Connection, revision: str, app_role: str) -> str | None:
    command.upgrade(alembic_config(connection), revision)
    if app_role and connection.dialect.name == "postgresql":
        for statement in rls.grant_sql(app_role):
            connection.execute(text(statement))
    return _current(connection)


async def upgrade(url: str, revision: str = "head", app_role: str = "") -> str | None:
    return await _run(url, _upgrade, revision, app_role)  # type: ignore[no-any-return]


def _downgrade(connection: Connection, revision: str) -> None:
    command.downgrade(alembic_config(connection), revision)


async def downgrade(url: str, revision: str) -> None:
    await _run(url, _downgrade, revision)


# Monthly partitions of a partitioned table (positions_p202612): made at run time, not models.
_PARTITION = re.compile(r"^[a-z_]+_p[0-9]{6}$")


def _not_a_partition(name: str | None, type_: str, _parent: Any) -> bool:
    return not (type_ == "table" and name is not None and _PARTITION.match(name))


def _diffs(connection: Connection, metadata: MetaData) -> list[Any]:
    from alembic.autogenerate import compare_metadata

    ctx = MigrationContext.configure(
        connection,
        opts={"compare_type": True, "render_as_batch": True, "include_name": _not_a_partition},
    )
    return list(compare_metadata(ctx, metadata))


async def drift(url: str, metadata: MetaData) -> list[Any]:
    """Differences between `metadata` (every domain's tables, `ctafleet.domains.metadata()`)
    and a database migrated to head (empty: no drift)."""
    return await _run(url, _diffs, metadata)  # type: ignore[no-any-return]


async def revision_of(url: str) -> str | None:
    return await _run(url, _current)  # type: ignore[no-any-return]
