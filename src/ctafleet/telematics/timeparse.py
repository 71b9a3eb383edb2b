"""Device clocks, read the way trackers write them.

Epoch seconds or milliseconds (a number from 2147483647 up is milliseconds, as Traccar reads it:
the largest 32-bit second count is 2038), ISO-8601 with an offset, or `yyyy-MM-dd HH:mm:ss`
taken as UTC. Every result is timezone-aware UTC; anything unreadable or outside the calendar is
a ValueError, never an OverflowError or OSError.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

MILLIS_FROM = 2_147_483_647

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# datetime's own range, 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z, in epoch seconds.
_MIN_SECONDS = -62_135_596_800
_MAX_SECONDS = 253_402_300_799
# ASCII digits only (`\d` would take any script's), bounded so int() never meets a huge string.
_EPOCH_NUMBER = re.compile(r"[+-]?[0-9]{1,20}(?:\.[0-9]{1,9})?")
_SPACED = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,9})?")


def from_epoch(value: float) -> datetime:
    """Epoch seconds, or milliseconds from MILLIS_FROM up, as an aware UTC datetime."""
    millis = value >= MILLIS_FROM
    seconds = value / 1000 if millis else value
    if not _MIN_SECONDS <= seconds <= _MAX_SECONDS:  # also refuses NaN
        raise ValueError("epoch time outside the calendar")
    if millis and isinstance(value, int):
        # Integer arithmetic: no float rounding of the milliseconds.
        return _EPOCH + timedelta(milliseconds=value)
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError):  # the last microsecond of 9999 rounding up, say
        raise ValueError("epoch time outside the calendar") from None


def parse_device_time(value: str) -> datetime:
    """A device's time string as an aware UTC datetime; ValueError when it is none."""
    if value.isdigit() and value.isascii() and len(value) <= 20:  # the usual case, cheaply
        return from_epoch(int(value))
    if _EPOCH_NUMBER.fullmatch(value):
        return from_epoch(float(value) if "." in value else int(value))
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        # `2014-06-04 09:10:11` is UTC by the protocol; an ISO time without an offset could be
        # any zone's local time, so it is refused rather than guessed.
        if not _SPACED.fullmatch(value):
            raise ValueError("a time without an offset")
        return parsed.replace(tzinfo=UTC)
    if parsed.tzinfo is UTC:
        return parsed
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+01:00 is before the calendar starts
        raise ValueError("time outside the calendar") from None
