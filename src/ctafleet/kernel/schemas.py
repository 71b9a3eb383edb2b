"""Schema bases every domain's `schemas.py` builds on."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, AwareDatetime, BaseModel, BeforeValidator, ConfigDict


class Strict(BaseModel):
    """Input: unknown fields are refused, text is stripped."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class ReadModel(BaseModel):
    """Output: read from ORM objects or row mappings."""

    model_config = ConfigDict(from_attributes=True)


def _utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError as exc:  # 9999-12-31T23:00-05:00 is past the end of the calendar
        raise ValueError("the time is out of range") from exc


# Timestamps are stored in UTC: normalising on the way in answers a create with what a later
# read returns, and a time at the edge of the calendar is a 422 here rather than a 500 later.
UtcDatetime = Annotated[AwareDatetime, AfterValidator(_utc)]


def _no_number(value: Any) -> Any:
    # Pydantic reads a number as seconds since 1970 (`0` is 1970-01-01): a date must be text.
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise ValueError("a date is text in ISO 8601 form (YYYY-MM-DD), not a number")
    return value


IsoDate = Annotated[date, BeforeValidator(_no_number)]
