from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Literal, Self

from pydantic import Field, field_validator, model_validator

from ctafleet.kernel.money import MAX_MINOR, validate_currency
from ctafleet.kernel.schemas import IsoDate, ReadModel, Strict, UtcDatetime

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

MAX_ODOMETER_M = 10_000_000_000  # ten million km: far past any real vehicle
MAX_ENGINE_S = 3_600 * 1_000_000


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
    purchase_date: IsoDate | None = None
    purchase_cost_minor: int | None = Field(
        None, ge=0, le=MAX_MINOR, description="Purchase cost in minor units (cents)."
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
        # The VIN is checked by the service (`invalid-vin`, on create as on update).
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
    purchase_date: IsoDate | None = None
    purchase_cost_minor: int | None = Field(None, ge=0, le=MAX_MINOR)
    purchase_currency: str | None = Field(None, min_length=3, max_length=3)
    home_name: str | None = Field(None, max_length=200)
    home_lat: float | None = Field(None, ge=-90, le=90)
    home_lon: float | None = Field(None, ge=-180, le=180)
    notes: str | None = Field(None, max_length=5000)
    odometer_m: int | None = Field(None, ge=0, le=MAX_ODOMETER_M)
    engine_hours_s: int | None = Field(None, ge=0, le=MAX_ENGINE_S)
    corrects_reading_id: uuid.UUID | None = Field(
        None,
        description="With meter_correction_reason: the reading (GET .../meters) this fixes.",
    )
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


MeterSource = Literal["manual", "device", "fuel", "work_order"]


class MeterReading(Strict):
    odometer_m: int | None = Field(None, ge=0, le=MAX_ODOMETER_M)
    engine_hours_s: int | None = Field(None, ge=0, le=MAX_ENGINE_S)
    read_at: UtcDatetime | None = Field(
        None, description="When the meter showed this (default: now); may be in the past."
    )
    source: MeterSource = Field(
        "manual",
        description="Where the value comes from: read by a person, a telematics "
        "device, a fuel purchase, a work order.",
    )
    note: str = Field("", max_length=500)

    @model_validator(mode="after")
    def _one(self) -> Self:
        if self.odometer_m is None and self.engine_hours_s is None:
            raise ValueError("send odometer_m, engine_hours_s or both")
        return self


class VehicleRead(ReadModel):
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


class MeterReadingRead(ReadModel):
    id: uuid.UUID
    vehicle_id: uuid.UUID
    read_at: datetime
    odometer_m: int | None
    engine_hours_s: int | None
    source: str = Field(description="manual, device, fuel, work_order, or correction.")
    corrects_id: uuid.UUID | None = Field(description="The reading a correction fixes.")
    note: str
    recorded_by: uuid.UUID | None
    created_at: datetime
