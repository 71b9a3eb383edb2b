from __future__ import annotations

import uuid
from datetime import datetime
from typing import Self

from pydantic import Field, model_validator

from ctafleet.kernel.schemas import ReadModel, Strict, UtcDatetime


class AssignmentCreate(Strict):
    vehicle_id: uuid.UUID
    driver_id: uuid.UUID
    starts_at: UtcDatetime
    ends_at: UtcDatetime | None = Field(None, description="Open-ended when omitted.")
    notes: str = Field("", max_length=2000)

    @model_validator(mode="after")
    def _order(self) -> Self:
        if self.ends_at is not None and self.ends_at <= self.starts_at:
            raise ValueError("ends_at must be after starts_at")
        return self


class AssignmentUpdate(Strict):
    ends_at: UtcDatetime | None = None
    notes: str | None = Field(None, max_length=2000)


class AssignmentRead(ReadModel):
    id: uuid.UUID
    vehicle_id: uuid.UUID
    driver_id: uuid.UUID
    starts_at: datetime
    ends_at: datetime | None
    notes: str
    created_at: datetime
    updated_at: datetime
    version: int
