from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from pydantic import Field, field_validator

from ctafleet.kernel.money import validate_currency
from ctafleet.kernel.roles import RoleName
from ctafleet.kernel.schemas import ReadModel, Strict

SLUG = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


def validate_timezone(value: str) -> str:
    if value not in available_timezones():
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(
                f"unknown time zone {value!r} (use an IANA name like Europe/Berlin)"
            ) from exc
    return value


class TenantSettingsUpdate(Strict):
    name: str | None = Field(None, min_length=1, max_length=200)
    display_units: Literal["metric", "imperial"] | None = None
    timezone: str | None = Field(None, max_length=64)
    currency: str | None = Field(None, min_length=3, max_length=3)
    mfa_required_roles: list[RoleName] | None = Field(None, max_length=7)

    _tz = field_validator("timezone")(lambda v: v if v is None else validate_timezone(v))
    _cur = field_validator("currency")(lambda v: v if v is None else validate_currency(v))


class TenantRead(ReadModel):
    id: uuid.UUID
    slug: str
    name: str
    display_units: str
    timezone: str
    currency: str
    mfa_required_roles: list[str]
    created_at: datetime
    updated_at: datetime
    version: int
