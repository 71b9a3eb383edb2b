"""Position retention: delete what is older than each tenant's retention (`ctafleet telemetry
prune`).

On PostgreSQL whole monthly partitions older than the longest retention of any tenant are
dropped (instant, no dead rows, no vacuum debt); what remains past a shorter retention is
deleted per device in chunks, each its own short transaction, so a prune never holds long
locks or builds one huge transaction beside live ingest. SQLite has no partitions: chunks only.

Only positions are pruned: trips, events and last positions are small and kept.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import cast

from sqlalchemy import Table, and_, delete, func, select, text

from ctafleet.db.engine import Database
from ctafleet.telematics.ingest import writer
from ctafleet.telematics.models import Device, Position, TelemetrySettings

_positions = cast(Table, Position.__table__)

# The partitions of `positions` and the first instant each one no longer covers.
_PARTITIONS = text(
    "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
    "WHERE i.inhparent = 'positions'::regclass AND c.relname ~ '^positions_p[0-9]{6}$' "
    "ORDER BY c.relname"
)


@dataclass
class TenantPrune:
    tenant_id: uuid.UUID
    retention_days: int
    cutoff: datetime
    deleted: int = 0


@dataclass
class PruneReport:
    dry_run: bool
    # Partitions dropped (or, in a dry run, that would be): all their rows are older than
    # every tenant's retention.
    partitions: list[str] = field(default_factory=list)
    partition_cutoff: datetime | None = None
    tenants: list[TenantPrune] = field(default_factory=list)

    @property
    def deleted(self) -> int:
        return sum(t.deleted for t in self.tenants)


def partition_end(name: str) -> datetime:
    """`positions_p202405` covers May 2024: it ends at 2024-06-01 00:00 UTC."""
    year, month = int(name[-6:-2]), int(name[-2:])
    year, month = divmod(year * 12 + month, 12)
    return datetime(year, month + 1, 1, tzinfo=UTC)


async def retention_by_tenant(db: Database, *, default_days: int) -> dict[uuid.UUID, int]:
    """Every tenant with devices, and its retention in days (its own, or the default)."""
    async with db.system_session() as session:
        tenants = set(await session.scalars(select(Device.tenant_id).distinct()))
        rows = await session.execute(
            select(TelemetrySettings.tenant_id, TelemetrySettings.retention_days)
        )
        own = {tenant: days for tenant, days in rows}
    return {t: own.get(t, default_days) for t in tenants}


async def prune(
    db: Database,
    *,
    now: datetime,
    default_days: int,
    chunk: int = 10_000,
    dry_run: bool = False,
    progress: Callable[[str], None] = lambda _line: None,
) -> PruneReport:
    """Delete (or count, with `dry_run`) the positions older than their tenant's retention."""
    if chunk < 1:
        raise ValueError("chunk must be at least 1")
    report = PruneReport(dry_run=dry_run)
    retention = await retention_by_tenant(db, default_days=default_days)
    longest = max([default_days, *retention.values()])
    async with db.system_session() as session:
        postgres = (await session.connection()).dialect.name == "postgresql"
    if postgres:
        report.partition_cutoff = now - timedelta(days=longest)
        await _drop_partitions(db, report, report.partition_cutoff, progress)
    for tenant_id, days in sorted(retention.items(), key=lambda item: str(item[0])):
        if postgres and days >= longest:
            continue  # the partitions dropped were all this tenant had past its retention
        tenant = TenantPrune(tenant_id, days, now - timedelta(days=days))
        report.tenants.append(tenant)
        # A dry run dropped nothing: what the partitions hold is not counted twice.
        dropped_until = max(map(partition_end, report.partitions), default=None)
        await _delete_tenant(db, tenant, chunk=chunk, dry_run=dry_run, after=dropped_until)
        verb = "would delete" if dry_run else "deleted"
        progress(
            f"tenant {tenant_id}: {verb} {tenant.deleted} positions before "
            f"{tenant.cutoff:%Y-%m-%d %H:%M} UTC ({days} days)"
        )
    return report


async def _drop_partitions(
    db: Database, report: PruneReport, cutoff: datetime, progress: Callable[[str], None]
) -> None:
    if report.dry_run:
        async with db.system_session() as session:
            names = list(await session.scalars(_PARTITIONS))
        report.partitions = [n for n in names if partition_end(n) <= cutoff]
    else:
        async with db.system_session() as session, session.begin():
            report.partitions = list(
                await session.scalars(
                    text("SELECT ctafleet_positions_drop_before(:cutoff)"), {"cutoff": cutoff}
                )
            )
        # This process's writer asks for them again if a late point needs one; other
        # processes forget on their own schedule (see writer.PARTITIONS_TTL_S).
        writer.forget_partitions()
    verb = "would drop" if report.dry_run else "dropped"
    for name in report.partitions:
        progress(f"{verb} partition {name} (older than {cutoff:%Y-%m-%d} for every tenant)")


async def _delete_tenant(
    db: Database, tenant: TenantPrune, *, chunk: int, dry_run: bool, after: datetime | None
) -> None:
    async with db.system_session() as session:
        devices = list(
            await session.scalars(
                select(Device.id).where(Device.tenant_id == tenant.tenant_id).order_by(Device.id)
            )
        )
    old = _positions.c.fix_time < tenant.cutoff
    for device in devices:
        mine = and_(_positions.c.device_id == device, _positions.c.tenant_id == tenant.tenant_id)
        if dry_run:
            counted = [mine, old]
            if after is not None:
                counted.append(_positions.c.fix_time >= after)
            async with db.system_session() as session:
                found = await session.scalar(
                    select(func.count()).select_from(_positions).where(*counted)
                )
            tenant.deleted += int(found or 0)
            continue
        oldest = (
            select(_positions.c.fix_time)
            .where(mine, old)
            .order_by(_positions.c.fix_time)
            .limit(chunk)
            .scalar_subquery()
        )
        while True:
            async with db.system_session() as session, session.begin():
                result = await session.execute(
                    delete(_positions).where(mine, _positions.c.fix_time.in_(oldest))
                )
            removed = int(result.rowcount or 0)  # type: ignore[attr-defined]
            tenant.deleted += removed
            if removed < chunk:
                break
