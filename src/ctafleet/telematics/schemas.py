from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import Field

from ctafleet.kernel.schemas import ReadModel, Strict

DeviceProtocol = Literal["osmand", "json", "mqtt"]


class DeviceCreate(Strict):
    unique_id: str = Field(
        min_length=3,
        max_length=64,
        pattern=r"^[A-Za-z0-9._:-]+$",
        description="The identifier the device reports (IMEI, OsmAnd device id).",
    )
    name: str = Field("", max_length=100)
    protocol: DeviceProtocol = "osmand"
    vehicle_id: uuid.UUID | None = None


class DeviceUpdate(Strict):
    name: str | None = Field(None, max_length=100)
    protocol: DeviceProtocol | None = None
    vehicle_id: uuid.UUID | None = None
    is_active: bool | None = None


class DeviceRead(ReadModel):
    id: uuid.UUID
    unique_id: str
    name: str
    protocol: str
    vehicle_id: uuid.UUID | None
    is_active: bool
    credential_prefix: str = Field(
        description="First characters of the credential, to tell it apart."
    )
    credential_rotated_at: datetime
    last_seen_at: datetime | None
    created_at: datetime
    updated_at: datetime
    version: int


class DeviceWithCredential(DeviceRead):
    credential: str = Field(
        description="The ingest credential. Shown only now: store it on the device."
    )
