"""Declarative base, column types and mixins shared by every domain's tables."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, ForeignKey, Index, Integer, MetaData, TypeDecorator, Uuid
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, declared_attr, mapped_column

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC timestamps on every backend (SQLite stores no offset)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: timestamps must carry a timezone")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime(), uuid.UUID: Uuid()}


class IdMixin:
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)


class TimestampMixin:
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class TenantMixin:
    """A tenant-owned row. Every such table gets row-level security on PostgreSQL."""

    __tenant_owned__ = True

    @declared_attr
    def tenant_id(cls) -> Mapped[uuid.UUID]:
        # The type is explicit: inferred from the foreign key, it would stay unknown in a
        # process that never imports the tenants table (`ctafleet worker`), and SQLite would
        # be handed raw UUIDs.
        return mapped_column(Uuid, ForeignKey("tenants.id", ondelete="CASCADE"), index=True)


class VersionedMixin:
    """Optimistic concurrency: the version is the ETag; a stale write raises StaleDataError."""

    version: Mapped[int] = mapped_column(Integer, default=1, nullable=False)

    @declared_attr.directive
    def __mapper_args__(cls) -> dict[str, Any]:
        return {"version_id_col": cls.version}


def sort_indexes(table: str, *columns: str) -> tuple[Index, ...]:
    """One `(tenant_id, column)` index per column a list may be sorted by: a page of a sorted
    list is then an index range scan, however large the fleet (keyset pagination)."""
    return tuple(Index(f"ix_{table}_tenant_{column}", "tenant_id", column) for column in columns)


def tenant_owned_tables() -> list[str]:
    return sorted(
        str(m.class_.__tablename__)
        for m in Base.registry.mappers
        if getattr(m.class_, "__tenant_owned__", False)
    )
