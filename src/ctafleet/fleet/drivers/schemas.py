from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import Field

from ctafleet.kernel.schemas import IsoDate, ReadModel, Strict

DriverStatus = Literal["active", "inactive", "suspended"]
Text100 = Field(min_length=1, max_length=100)


class DriverCreate(Strict):
    first_name: str = Text100
    last_name: str = Text100
    employee_number: str = Field(min_length=1, max_length=32)
    licence_number: str = Field(min_length=1, max_length=32)
    licence_class: str = Field(min_length=1, max_length=16)
    licence_jurisdiction: str = Field(min_length=2, max_length=16)
    licence_expiry: IsoDate
    status: DriverStatus = "active"
    email: str | None = Field(None, max_length=320, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    phone: str | None = Field(None, max_length=32, pattern=r"^\+?[0-9 ()-]{3,31}$")
    user_id: uuid.UUID | None = Field(None, description="The user who logs in as this driver.")


class DriverUpdate(Strict):
    first_name: str | None = Field(None, min_length=1, max_length=100)
    last_name: str | None = Field(None, min_length=1, max_length=100)
    employee_number: str | None = Field(None, min_length=1, max_length=32)
    licence_number: str | None = Field(None, min_length=1, max_length=32)
    licence_class: str | None = Field(None, min_length=1, max_length=16)
    licence_jurisdiction: str | None = Field(None, min_length=2, max_length=16)
    licence_expiry: IsoDate | None = None
    status: DriverStatus | None = None
    email: str | None = Field(None, max_length=320, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    phone: str | None = Field(None, max_length=32, pattern=r"^\+?[0-9 ()-]{3,31}$")
    user_id: uuid.UUID | None = None


class DriverRead(ReadModel):
    id: uuid.UUID
    first_name: str
    last_name: str
    employee_number: str
    licence_number: str
    licence_class: str
    licence_jurisdiction: str
    licence_expiry: IsoDate
    status: str
    email: str | None
    phone: str | None
    user_id: uuid.UUID | None
    created_at: datetime
    updated_at: datetime
    version: int
