from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from typing import Annotated, Literal, Self

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from ctafleet.fleet.vin import validate_vin
from ctafleet.tenants.schemas import validate_currency

VehicleStatus = Literal["active", "in_shop", "out_of_service", "retired"]
VehicleType = Literal[
    "car",
    "suv",
    "pickup",
    "van",
    "truck",
    "heavy_truck",
    "bus",
    "motorcycle",
    "trailer",
    "heavy_equipment",
    "other",
]
FuelType = Literal["gasoline", "diesel", "electric", "hybrid", "cng", "lpg", "hydrogen", "other"]
DriverStatus = Literal["active", "inactive", "suspended"]
DeviceProtocol = Literal["osmand", "json", "mqtt"]

MAX_ODOMETER_M = 10_000_000_000  # ten million km: far past any real vehicle
MAX_ENGINE_S = 3_600 * 1_000_000
Text100 = Field(min_length=1, max_length=100)


def _utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError as exc:  # 9999-12-31T23:00-05:00 is past the end of the calendar
        raise ValueError("the time is out of range") from exc


# Timestamps are stored in UTC: normalising on the way in answers a create with what a later
# read returns, and a time at the edge of the calendar is a 422 here rather than a 500 later.
UtcDatetime = Annotated[AwareDatetime, AfterValidator(_utc)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


def _year_ok(year: int) -> int:
    if year > date.today().year + 2:
        raise ValueError("model year is more than two years ahead")
    return year


class _VehicleFields(Strict):
    unit_number: str = Field(min_length=1, max_length=32, description="Fleet (unit) number.")
    plate: str = Field(min_length=1, max_length=16, pattern=r"^[A-Za-z0-9 -]+$")
    plate_jurisdiction: str = Field(
        min_length=2, max_length=16, description="State, province or country code, e.g. `US-IL`."
    )
    make: str = Field(min_length=1, max_length=64)
    model: str = Field(min_length=1, max_length=64)
    year: int = Field(ge=1900, le=2100)
    vehicle_type: VehicleType
    department: str = Field("", max_length=100)
    status: VehicleStatus = "active"
    fuel_type: FuelType
    tank_capacity_l: float | None = Field(None, gt=0, le=5000)
    purchase_date: date | None = None
    purchase_cost_minor: int | None = Field(
        None, ge=0, le=10**13, description="Purchase cost in minor units (cents)."
    )
    purchase_currency: str | None = Field(None, min_length=3, max_length=3)
    home_name: str = Field("", max_length=200)
    home_lat: float | None = Field(None, ge=-90, le=90)
    home_lon: float | None = Field(None, ge=-180, le=180)
    notes: str = Field("", max_length=5000)

    _year = field_validator("year")(_year_ok)
    _currency = field_validator("purchase_currency")(
        lambda v: None if v is None else validate_currency(v)
    )


class VehicleCreate(_VehicleFields):
    vin: str = Field(min_length=1, max_length=32)
    vin_nonstandard: bool = Field(
        False, description="Accept an identifier without the North-American check digit."
    )
    odometer_m: int = Field(0, ge=0, le=MAX_ODOMETER_M, description="Odometer in metres.")
    engine_hours_s: int = Field(0, ge=0, le=MAX_ENGINE_S, description="Engine hours in seconds.")

    @model_validator(mode="after")
    def _checks(self) -> Self:
        self.vin = validate_vin(self.vin, nonstandard=self.vin_nonstandard)
        if self.purchase_cost_minor is not None and self.purchase_currency is None:
            raise ValueError("purchase_currency is required with purchase_cost_minor")
        if (self.home_lat is None) != (self.home_lon is None):
            raise ValueError("home_lat and home_lon go together")
        return self


class VehicleUpdate(Strict):
    unit_number: str | None = Field(None, min_length=1, max_length=32)
    vin: str | None = Field(None, min_length=1, max_length=32)
    vin_nonstandard: bool | None = None
    plate: str | None = Field(None, min_length=1, max_length=16, pattern=r"^[A-Za-z0-9 -]+$")
    plate_jurisdiction: str | None = Field(None, min_length=2, max_length=16)
    make: str | None = Field(None, min_length=1, max_length=64)
    model: str | None = Field(None, min_length=1, max_length=64)
    year: int | None = Field(None, ge=1900, le=2100)
    vehicle_type: VehicleType | None = None
    department: str | None = Field(None, max_length=100)
    status: VehicleStatus | None = None
    fuel_type: FuelType | None = None
    tank_capacity_l: float | None = Field(None, gt=0, le=5000)
    purchase_date: date | None = None
    purchase_cost_minor: int | None = Field(None, ge=0, le=10**13)
    purchase_currency: str | None = Field(None, min_length=3, max_length=3)
    home_name: str | None = Field(None, max_length=200)
    home_lat: float | None = Field(None, ge=-90, le=90)
    home_lon: float | None = Field(None, ge=-180, le=180)
    notes: str | None = Field(None, max_length=5000)
    odometer_m: int | None = Field(None, ge=0, le=MAX_ODOMETER_M)
    engine_hours_s: int | None = Field(None, ge=0, le=MAX_ENGINE_S)
    meter_correction_reason: str | None = Field(
        None,
        min_length=3,
        max_length=500,
        description="Required to lower the odometer or engine hours (an explicit correction).",
    )

    _year = field_validator("year")(lambda v: v if v is None else _year_ok(v))
    _currency = field_validator("purchase_currency")(
        lambda v: None if v is None else validate_currency(v)
    )


class MeterReading(Strict):
    odometer_m: int | None = Field(None, ge=0, le=MAX_ODOMETER_M)
    engine_hours_s: int | None = Field(None, ge=0, le=MAX_ENGINE_S)

    @model_validator(mode="after")
    def _one(self) -> Self:
        if self.odometer_m is None and self.engine_hours_s is None:
            raise ValueError("send odometer_m, engine_hours_s or both")
        return self


class VehicleRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    unit_number: str
    vin: str
    vin_nonstandard: bool
    plate: str
    plate_jurisdiction: str
    make: str
    model: str
    year: int
    vehicle_type: str
    department: str
    status: str
    odometer_m: int
    engine_hours_s: int
    fuel_type: str
    tank_capacity_l: float | None
    purchase_date: date | None
    purchase_cost_minor: int | None
    purchase_currency: str | None
    home_name: str
    home_lat: float | None
    home_lon: float | None
    notes: str
    created_at: datetime
    updated_at: datetime
    version: int


class DriverCreate(Strict):
    first_name: str = Text100
    last_name: str = Text100
    employee_number: str = Field(min_length=1, max_length=32)
    licence_number: str = Field(min_length=1, max_length=32)
    licence_class: str = Field(min_length=1, max_length=16)
    licence_jurisdiction: str = Field(min_length=2, max_length=16)
    licence_expiry: date
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
    licence_expiry: date | None = None
    status: DriverStatus | None = None
    email: str | None = Field(None, max_length=320, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    phone: str | None = Field(None, max_length=32, pattern=r"^\+?[0-9 ()-]{3,31}$")
    user_id: uuid.UUID | None = None


class DriverRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    first_name: str
    last_name: str
    employee_number: str
    licence_number: str
    licence_class: str
    licence_jurisdiction: str
    licence_expiry: date
    status: str
    email: str | None
    phone: str | None
    user_id: uuid.UUID | None
    created_at: datetime
    updated_at: datetime
    version: int


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


class AssignmentRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    vehicle_id: uuid.UUID
    driver_id: uuid.UUID
    starts_at: datetime
    ends_at: datetime | None
    notes: str
    created_at: datetime
    updated_at: datetime
    version: int


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


class DeviceRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

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
