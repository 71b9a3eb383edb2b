"""Positions as stored, read straight from PostgreSQL by the tests that run the real processes
(containers, pods) and so have no app object to ask."""

from __future__ import annotations

from datetime import datetime

import asyncpg


async def fix_times(owner_url: str, unique_id: str) -> list[datetime]:
    """Fix times stored for the device, as the owner: row-level security hides every row
    from a role with no tenant set."""
    conn = await asyncpg.connect(owner_url.replace("postgresql+asyncpg", "postgresql"))
    try:
        rows = await conn.fetch(
            "SELECT p.fix_time FROM positions p JOIN devices d ON d.id = p.device_id "
            "WHERE d.unique_id = $1",
            unique_id,
        )
        return [r["fix_time"] for r in rows]
    finally:
        await conn.close()
