"""The one source of a session's tenant: row-level security and the service layer's tenant
filter both read it from here, so they cannot disagree.

A session is opened either for an `Actor` (`Database.session(actor)`: bound to the actor's
tenant) or for the system (`system_session`: the few deliberately cross-tenant operations:
login, token refresh, device authentication, the audited-404 existence check). For a tenant
session, on every backend:

- every ORM SELECT, UPDATE and DELETE of a tenant-owned table gets `tenant_id = <tenant>`
  (`with_loader_criteria`), so a query that forgets the filter still sees one tenant;
- every new tenant-owned row is stamped with the tenant, and a row for another tenant is
  refused before it reaches the database;
- on PostgreSQL, each transaction sets `ctafleet.tenant_id` for row-level security, the second
  wall (see `db/rls.py`).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy import bindparam, event, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import ORMExecuteState, Session, SessionTransaction, with_loader_criteria
from sqlalchemy.sql import Executable

from ctafleet.db.base import TenantMixin
from ctafleet.kernel.context import Actor

ACTOR_KEY = "ctafleet.actor"
SYSTEM_KEY = "ctafleet.system"


class TenancyMismatch(RuntimeError):
    """A programming error: a service was handed a session of one tenant and an actor of
    another, or a tenant session was asked to write another tenant's row."""


def bind(session: AsyncSession | Session, actor: Actor) -> None:
    session.info[ACTOR_KEY] = actor


def tenant_of(session: AsyncSession | Session) -> uuid.UUID | None:
    """The tenant the session is bound to; None for a system session."""
    actor = session.info.get(ACTOR_KEY)
    return actor.tenant_id if actor is not None else None


def is_system(session: AsyncSession | Session) -> bool:
    return bool(session.info.get(SYSTEM_KEY))


def check(session: AsyncSession, actor: Actor) -> None:
    """Refuses an actor whose tenant is not the session's (a system session serves any)."""
    if is_system(session):
        return
    tenant = tenant_of(session)
    if tenant is None or tenant != actor.tenant_id:
        raise TenancyMismatch(
            f"session bound to tenant {tenant}, actor of tenant {actor.tenant_id}"
        )


def system_session(bind: AsyncEngine | Any) -> AsyncSession:
    """The one factory of system-scoped sessions (cross-tenant: use sparingly)."""
    return AsyncSession(bind=bind, expire_on_commit=False, info={SYSTEM_KEY: True})


# The filter every tenant-owned table gets. One option object whose tenant is a bound parameter
# (not a value captured by the lambda): the statement's cache key is then the same for every
# tenant, so the filtered statement compiles once and each execution only binds the tenant.
TENANT_PARAM = "ctafleet_tenant_scope"
TENANT_FILTER = with_loader_criteria(
    TenantMixin,
    # The name is spelled out: SQLAlchemy analyses the lambda, and a global in it would be
    # tracked as a closure variable.
    lambda cls: cls.tenant_id == bindparam("ctafleet_tenant_scope"),
    include_aliases=True,
    track_closure_variables=False,
)


def tenant_filtered(stmt: Executable, tenant: uuid.UUID) -> tuple[Executable, dict[str, uuid.UUID]]:
    """`stmt` with the tenant filter, and the parameter it binds (for a Core execution)."""
    return stmt.options(TENANT_FILTER), {TENANT_PARAM: tenant}


@event.listens_for(Session, "do_orm_execute")
def _filter_by_tenant(state: ORMExecuteState) -> None:
    if state.is_column_load or state.is_relationship_load:
        return  # loads of rows this session already read under the filter
    if not (state.is_select or state.is_update or state.is_delete):
        return
    tenant = tenant_of(state.session)
    if tenant is None:
        if not is_system(state.session) and _touches_tenant_tables(state):
            raise TenancyMismatch("a session bound to no tenant queried tenant-owned rows")
        return
    state.statement = state.statement.options(TENANT_FILTER)
    params = state.parameters
    if not params:
        state.parameters = {TENANT_PARAM: tenant}
    elif isinstance(params, Mapping):
        state.parameters = {**params, TENANT_PARAM: tenant}
    else:  # a list of parameter sets (executemany): each binds the tenant
        state.parameters = [{**p, TENANT_PARAM: tenant} for p in params]


def _touches_tenant_tables(state: ORMExecuteState) -> bool:
    return any(issubclass(mapper.class_, TenantMixin) for mapper in state.all_mappers)


@event.listens_for(Session, "before_flush")
def _stamp_tenant(session: Session, _ctx: Any, _instances: Any) -> None:
    if is_system(session):
        return
    tenant = tenant_of(session)
    for obj in session.new:
        if not isinstance(obj, TenantMixin):
            continue
        if tenant is None:
            raise TenancyMismatch("a session bound to no tenant wrote a tenant-owned row")
        if obj.tenant_id is None:
            obj.tenant_id = tenant
        elif obj.tenant_id != tenant:
            raise TenancyMismatch(f"a session of tenant {tenant} wrote a row of {obj.tenant_id}")


@event.listens_for(Session, "after_begin")
def _set_rls_scope(session: Session, _tx: SessionTransaction, connection: Connection) -> None:
    """Each PostgreSQL transaction carries the tenant (or system) scope that RLS reads."""
    if connection.dialect.name != "postgresql":
        return
    tenant = tenant_of(session)
    connection.execute(
        text(
            "SELECT set_config('ctafleet.tenant_id', :t, true), "
            "set_config('ctafleet.scope', :s, true)"
        ),
        {"t": str(tenant) if tenant else "", "s": "system" if is_system(session) else ""},
    )
