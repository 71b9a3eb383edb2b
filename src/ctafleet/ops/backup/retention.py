"""Which backups `prune` keeps.

Kept: every backup younger than `retention_days`; the newest backup of each of the
`keep_daily` most recent days that have one (likewise ISO weeks and calendar months, in
UTC); and always the newest backup, so pruning can never leave nothing to restore.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta


def keep(
    backups: Sequence[tuple[str, datetime]],
    now: datetime,
    *,
    retention_days: int,
    keep_daily: int = 0,
    keep_weekly: int = 0,
    keep_monthly: int = 0,
) -> set[str]:
    """The ids to keep among (id, time) pairs."""
    newest_first = sorted(backups, key=lambda b: b[1], reverse=True)
    kept = {bid for bid, when in newest_first if now - when < timedelta(days=retention_days)}
    if newest_first:
        kept.add(newest_first[0][0])
    periods: list[tuple[int, Callable[[datetime], tuple[int, ...]]]] = [
        (keep_daily, lambda t: (t.year, t.month, t.day)),
        (keep_weekly, lambda t: tuple(t.isocalendar())[:2]),
        (keep_monthly, lambda t: (t.year, t.month)),
    ]
    for count, period in periods:
        seen: set[tuple[int, ...]] = set()
        for bid, when in newest_first:
            if len(seen) >= count:
                break
            slot = period(when)
            if slot not in seen:
                seen.add(slot)
                kept.add(bid)
    return kept
