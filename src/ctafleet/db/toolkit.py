"""The data-access toolkit every service uses: tenant-scoped get and lock, create, the one
versioned update (snapshot → apply → audit → commit, conflicts mapped), delete.

Every function takes the session and the actor and checks that they agree (`scope.check`);
the tenant filter itself is the session's (see `db/scope.py`). Conflicts come out as domain
errors (`Conflict`, `PreconditionFailed`, `NotFound`), never as database exceptions.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import (
    ColumnElement,
    Date,
    DateTime,
    Row,
    Select,
    Table,
    TypeDecorator,
    Uuid,
    select,
    type_coerce,
)
from sqlalchemy import update as sql_update
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.exc import StaleDataError
from sqlalchemy.types import NullType

from ctafleet.db import audit
from ctafleet.db.scope import (
    TenancyMismatch,
    check,
    is_system,
    system_session,
    tenant_filtered,
    tenant_of,
)
from ctafleet.kernel.context import Actor
from ctafleet.kernel.errors import Conflict, NotFound, PreconditionFailed

M = TypeVar("M")
# The versions an If-Match names (RFC 9110: a list; the change applies if the row is at one).
IfMatch = frozenset[int]
# Re-runs a service's uniqueness checks after the database refused a write: the checks before
# the write cannot see a concurrent transaction's uncommitted row, the constraint can; the
# recheck then names the exact conflict against the committed winner.
Recheck = Callable[[], Awaitable[None]]


async def get(
    session: AsyncSession,
    actor: Actor,
    model: type[M],
    entity_id: uuid.UUID,
    *,
    entity: str,
    for_update: bool = False,
) -> M:
    """The row of the session's tenant, or `NotFound`, auditing a probe of another tenant's.

    `for_update` also locks the row until commit (see `lock`).
    """
    check(session, actor)
    obj = await session.get(model, entity_id)
    if obj is None:
        owner = await owner_tenant(session, model, entity_id)
        if owner is not None and owner != actor.tenant_id:
            await audit.record_cross_tenant_attempt(
                session, actor, entity_type=entity, owner_tenant_id=owner, entity_id=entity_id
            )
        raise NotFound(entity)
    if for_update:
        await lock(session, obj)
    return obj


async def rows(session: AsyncSession, stmt: Select[*tuple[Any, ...]]) -> Sequence[Row[Any]]:
    """The result of a select as plain rows, for reading only: `select(Vehicle)` gives rows
    of the table's columns, not `Vehicle` objects.

    Executed on the session's connection (same transaction, same row-level security scope)
    without the ORM's per-row loading, which costs several times the query itself for a page
    of rows. The tenant filter is the session's, as for every other query.
    """
    tenant = tenant_of(session)
    if tenant is None and not is_system(session):
        raise TenancyMismatch("a session bound to no tenant read tenant-owned rows")
    connection = await session.connection()
    if tenant is None:
        result = await connection.execute(stmt)
    else:
        filtered, params = tenant_filtered(stmt, tenant)
        result = await connection.execute(filtered, params)
    found: Sequence[Row[Any]] = result.all()
    return found


# What each column's raw driver value needs to render as JSON the way its schema would, per
# dialect; None: the value as the driver returns it. Types not listed keep SQLAlchemy's own
# result processing.
Decode = Callable[[Any], Any] | None


def _sqlite_uuid(value: Any) -> Any:
    # Uuid() stores 32 hex digits on SQLite; its text form is what pydantic renders.
    if value is None or len(value) != 32:
        return None if value is None else str(uuid.UUID(value))
    return f"{value[:8]}-{value[8:12]}-{value[12:16]}-{value[16:20]}-{value[20:]}"


def _sqlite_datetime(value: Any) -> Any:
    # SQLAlchemy stores `YYYY-MM-DD HH:MM:SS.ffffff` (UTC, see UTCDateTime); rendered as
    # pydantic does: ISO with `Z`, no fraction when it is zero. Anything else is parsed.
    if value is None:
        return None
    if len(value) == 26 and value[10] == " " and value[19] == ".":
        if value.endswith(".000000"):
            return f"{value[:10]}T{value[11:19]}Z"
        return f"{value[:10]}T{value[11:]}Z"
    parsed = datetime.fromisoformat(value)
    return (parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed).astimezone(UTC)


def _decoder(column: ColumnElement[Any], dialect: Dialect) -> Decode:
    kind = column.type
    base = kind.impl_instance if isinstance(kind, TypeDecorator) else kind
    if dialect.name == "sqlite":
        if isinstance(base, Uuid):
            return _sqlite_uuid
        if isinstance(base, DateTime):
            return _sqlite_datetime
        if isinstance(base, Date):
            return None  # stored as `YYYY-MM-DD`, its JSON form
    elif dialect.name == "postgresql" and isinstance(base, Uuid | DateTime | Date):
        # asyncpg's UUIDs, UTC-aware timestamps and dates render as they are.
        return None
    # Strings, integers, floats: no processing; booleans on SQLite, JSON text: SQLAlchemy's.
    processor: Decode = kind.result_processor(dialect, None)
    return processor


# Cached by table and names: columns compare with `==` into SQL expressions, not booleans.
@functools.cache
def _decoders(table: Table, keys: tuple[str, ...], dialect: Dialect) -> tuple[Decode, ...]:
    return tuple(_decoder(table.c[k], dialect) for k in keys)


@functools.cache
def _untyped(table: Table, keys: tuple[str, ...]) -> tuple[ColumnElement[Any], ...]:
    # Typeless: the driver's values come back untouched.
    return tuple(type_coerce(table.c[k], NullType()).label(k) for k in keys)


async def raw_rows(
    session: AsyncSession, stmt: Select[Any], table: Table, keys: Sequence[str]
) -> list[list[Any]]:
    """The columns `keys` of `table` in the rows `stmt` selects, as lists of values ready to
    render as JSON: the driver's values, decoded only where their JSON form differs (an SQLite
    UUID's hex, say), so an id may come back as its text.

    For list pages: SQLAlchemy's per-value result processing (a `uuid.UUID` and a `datetime`
    built for every UUID and timestamp, then turned back into text) cost more than the query.
    Same transaction, same tenant filter and row-level security scope as `rows`.
    """
    keys = tuple(keys)
    plain = stmt.with_only_columns(*_untyped(table, keys), maintain_column_froms=True)
    found = await rows(session, plain)
    decoders = _decoders(table, keys, session.get_bind().dialect)
    if not any(decoders):
        return [list(row) for row in found]
    pairs = [(i, d) for i, d in enumerate(decoders) if d is not None]
    out = []
    for row in found:
        values = list(row)
        for i, decode in pairs:
            values[i] = decode(values[i])
        out.append(values)
    return out


async def owner_tenant(
    session: AsyncSession, model: type[Any], entity_id: uuid.UUID
) -> uuid.UUID | None:
    """Which tenant owns the row, whatever the session's (for the audited 404 only)."""
    async with system_session(session.bind) as system:
        owner: uuid.UUID | None = (
            await system.scalars(select(model.tenant_id).where(model.id == entity_id))
        ).first()
        return owner


async def lock(session: AsyncSession, obj: Any) -> None:
    """Reads the row again under a lock held until commit, so that check-then-write sequences
    on it do not interleave, and so that the checks see the latest committed values.

    PostgreSQL locks the row (SELECT ... FOR UPDATE). SQLite has no row locks, and its driver
    opens a transaction only at the first write, so a no-op write takes the database's write
    lock. Lock only after every check that may audit a cross-tenant probe (`get` does): that
    audit is written from a second session, which would wait on this lock.
    """
    if session.get_bind().dialect.name == "sqlite":
        table = type(obj).__table__
        await session.execute(
            sql_update(table).where(table.c.id == obj.id).values(version=table.c.version)
        )
        await session.refresh(obj)
        return
    await session.refresh(obj, with_for_update=True)


def check_version(current: int, if_match: IfMatch | None) -> None:
    if if_match is not None and current not in if_match:
        named = ", ".join(f"v{v}" for v in sorted(if_match))
        raise PreconditionFailed(
            f"the object changed since you read it (version {current}, If-Match {named}); "
            "fetch it again and retry"
        )


async def commit(
    session: AsyncSession,
    *,
    what: str,
    if_match: IfMatch | None = None,
    recheck: Recheck | None = None,
    flush_only: bool = False,
) -> None:
    """Commit (or flush); losing a race to a concurrent writer is a conflict, never a 500."""
    try:
        if flush_only:
            await session.flush()
        else:
            await session.commit()
    except IntegrityError as exc:
        await session.rollback()
        if recheck is not None:
            await recheck()
        raise Conflict("duplicate", f"{what} conflicts with an existing record") from exc
    except StaleDataError as exc:
        await session.rollback()
        if if_match is not None:
            raise PreconditionFailed(
                f"{what} changed while this request ran; fetch it again and retry"
            ) from exc
        raise Conflict(
            "concurrent-update", f"{what} was changed by another request at the same time; retry"
        ) from exc


async def create(
    session: AsyncSession,
    actor: Actor,
    obj: M,
    *,
    entity: str,
    recheck: Recheck | None = None,
    commit_now: bool = True,
) -> M:
    """Adds a new row with its `create` audit event and commits."""
    check(session, actor)
    session.add(obj)
    what = f"the {entity}"
    await commit(session, what=what, recheck=recheck, flush_only=True)  # ids, defaults
    audit.record_created(session, actor, entity, obj)
    if commit_now:
        await commit(session, what=what, recheck=recheck)
    return obj


async def create_many(session: AsyncSession, actor: Actor, objs: list[Any], *, entity: str) -> None:
    """New rows and their `create` audit events in one flush, not committed (bulk imports,
    seeding): the caller commits, all or nothing."""
    check(session, actor)
    if not objs:
        return
    session.add_all(objs)
    await commit(session, what=f"the {entity}s", flush_only=True)
    for obj in objs:
        audit.record_created(session, actor, entity, obj)


async def update(
    session: AsyncSession,
    actor: Actor,
    obj: M,
    changes: Mapping[str, Any],
    *,
    entity: str,
    if_match: IfMatch | None = None,
    action: str = "update",
    note: Mapping[str, Any] | None = None,
    recheck: Recheck | None = None,
) -> M:
    """The one versioned update: check If-Match, apply, audit the fields that changed, commit.

    A change that changes nothing writes nothing and records nothing. `note` adds entries to
    the audit event (a correction's reason).
    """
    check(session, actor)
    check_version(obj.version, if_match)  # type: ignore[attr-defined]
    before = audit.snapshot(obj)
    for key, value in changes.items():
        setattr(obj, key, value)
    changed = audit.diff(before, audit.snapshot(obj))
    if not changed:
        return obj
    if note:
        changed.update({k: {"before": None, "after": v} for k, v in note.items()})
    audit.record(
        session,
        actor,
        action=action,
        entity_type=entity,
        entity_id=obj.id,  # type: ignore[attr-defined]
        changes=changed,
    )
    await commit(session, what=f"the {entity}", if_match=if_match, recheck=recheck)
    return obj


async def delete(session: AsyncSession, actor: Actor, obj: Any, *, entity: str) -> None:
    """Deletes the row, recording every column it had."""
    check(session, actor)
    audit.record(
        session,
        actor,
        action="delete",
        entity_type=entity,
        entity_id=obj.id,
        changes=audit.diff(audit.snapshot(obj), None),
    )
    await session.delete(obj)
    await commit(session, what=f"the {entity}")
