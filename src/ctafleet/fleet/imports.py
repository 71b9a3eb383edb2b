"""Onboarding a fleet from a spreadsheet: vehicles (keyed on VIN) and drivers (keyed on
employee number) from CSV with a header row.

A file is imported whole or not at all: every row is checked first and every problem is
reported with its row number; only a file without problems is written. Importing the same file
again changes nothing (rows equal to what is stored are `unchanged`); a changed row updates its
object, with the same rules and audit as an API update. `dry_run` checks and counts, writes
nothing.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field, ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ctafleet.db import audit, toolkit
from ctafleet.fleet.drivers.models import Driver
from ctafleet.fleet.drivers.schemas import DriverCreate
from ctafleet.fleet.vehicles.models import MeterReading, Vehicle
from ctafleet.fleet.vehicles.schemas import VehicleCreate
from ctafleet.fleet.vehicles.vin import validate_vin
from ctafleet.kernel.context import Actor
from ctafleet.kernel.errors import Invalid

MAX_ROWS = 20_000
FIRST_ROW = 2  # the header is line 1: rows are numbered as a spreadsheet shows them


@dataclass(frozen=True)
class RowError:
    row: int
    field: str | None
    message: str

    def as_problem(self) -> dict[str, Any]:
        loc: list[str | int] = ["row", self.row]
        if self.field:
            loc.append(self.field)
        return {"loc": loc, "msg": self.message, "type": "import"}


class ImportReport(BaseModel):
    dry_run: bool = Field(description="Nothing was written: the file was only checked.")
    created: int
    updated: int
    unchanged: int = Field(description="Rows equal to what is stored (re-imports).")


@dataclass
class ImportResult:
    dry_run: bool
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    errors: list[RowError] = field(default_factory=list)

    def report(self) -> ImportReport:
        return ImportReport(
            dry_run=self.dry_run,
            created=self.created,
            updated=self.updated,
            unchanged=self.unchanged,
        )


class ImportRefused(Invalid):
    """The file has problems: nothing was written. `errors` names each, by row."""

    def __init__(self, errors: list[RowError]) -> None:
        super().__init__(
            None,
            f"the file was not imported: {len(errors)} problem(s); nothing was written",
            slug="import-invalid",
        )
        self.extra["errors"] = [e.as_problem() for e in errors[:1000]]
        self.errors = errors


def read_csv(text: str) -> tuple[list[str], list[dict[str, str]]]:
    """The header and the rows of a CSV file (UTF-8, a BOM allowed, `,` or `;` separated)."""
    text = text.removeprefix("\ufeff")
    if "\x00" in text:
        raise Invalid(None, "the file holds NUL characters: not CSV text", slug="import-invalid")
    try:
        return _read(text)
    except csv.Error as exc:
        raise Invalid(None, f"the file is not readable CSV: {exc}", slug="import-invalid") from exc


def _read(text: str) -> tuple[list[str], list[dict[str, str]]]:
    try:
        dialect = csv.Sniffer().sniff(text.split("\n", 1)[0], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    # Any line ending (\r\n, \n, a lone \r from old spreadsheets) ends a row.
    reader = csv.DictReader(io.StringIO(text, newline=None), dialect=dialect)
    header = [h.strip() for h in (reader.fieldnames or [])]
    reader.fieldnames = header
    rows = []
    for row in reader:
        if None in row:  # more cells than the header names
            row["__extra__"] = "x"
            row.pop(None)
        rows.append({k: (v or "").strip() for k, v in row.items() if k is not None})
        if len(rows) > MAX_ROWS:
            raise Invalid(None, f"at most {MAX_ROWS} rows per file", slug="import-invalid")
    return header, rows


def _check_header(header: list[str], schema: type[BaseModel], key: str) -> None:
    known = set(schema.model_fields)
    unknown = [h for h in header if h not in known]
    if unknown:
        raise Invalid(
            None,
            f"unknown column(s): {', '.join(unknown)}; columns: {', '.join(sorted(known))}",
            slug="import-invalid",
        )
    if key not in header:
        raise Invalid(None, f"the file needs a {key} column", slug="import-invalid")


def _parse(
    schema: type[BaseModel], row: dict[str, str], number: int, errors: list[RowError]
) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(the values the row gives, every field with defaults), or None with its errors noted."""
    if "__extra__" in row:
        errors.append(RowError(number, None, "more cells than the header has columns"))
        return None
    # An empty cell is "not given": the field's default on a new object, unchanged on update.
    given = {k: v for k, v in row.items() if v != ""}
    try:
        model = schema.model_validate(given)
    except ValidationError as exc:
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or None
            errors.append(RowError(number, where, str(err["msg"])))
        return None
    data = model.model_dump()
    return {k: data[k] for k in given}, data


@dataclass(frozen=True)
class _Kind:
    model: type[Any]
    schema: type[BaseModel]
    key: str  # the column that names an object across imports
    entity: str
    unique: tuple[tuple[str, ...], ...]  # other column sets unique within the tenant
    normalise: Callable[[dict[str, Any], dict[str, Any], int, list[RowError]], None]


def _vehicle_values(
    given: dict[str, Any], full: dict[str, Any], number: int, errors: list[RowError]
) -> None:
    try:
        full["vin"] = validate_vin(full["vin"], nonstandard=full.get("vin_nonstandard", False))
        given["vin"] = full["vin"]
    except ValueError as exc:
        errors.append(RowError(number, "vin", str(exc)))
    for key in ("plate", "plate_jurisdiction"):
        if key in given:
            given[key] = full[key] = full[key].upper()


def _no_change(
    given: dict[str, Any], full: dict[str, Any], number: int, errors: list[RowError]
) -> None:
    return


VEHICLES = _Kind(
    Vehicle,
    VehicleCreate,
    "vin",
    "vehicle",
    (("plate", "plate_jurisdiction"),),
    _vehicle_values,
)
DRIVERS = _Kind(Driver, DriverCreate, "employee_number", "driver", (), _no_change)


async def import_vehicles(
    *, session: AsyncSession, actor: Actor, text: str, dry_run: bool = False
) -> ImportResult:
    return await _import(session, actor, VEHICLES, text, dry_run)


async def import_drivers(
    *, session: AsyncSession, actor: Actor, text: str, dry_run: bool = False
) -> ImportResult:
    return await _import(session, actor, DRIVERS, text, dry_run)


async def _import(
    session: AsyncSession, actor: Actor, kind: _Kind, text: str, dry_run: bool
) -> ImportResult:
    header, rows = read_csv(text)
    _check_header(header, kind.schema, kind.key)
    if kind.schema is DriverCreate and "user_id" in header:
        raise Invalid(
            None, "user_id cannot be imported; link users one by one", slug="import-invalid"
        )
    result = ImportResult(dry_run=dry_run)
    errors = result.errors
    parsed: list[tuple[int, dict[str, Any], dict[str, Any]]] = []
    for number, row in enumerate(rows, start=FIRST_ROW):
        out = _parse(kind.schema, row, number, errors)
        if out is None:
            continue
        given, full = out
        before = len(errors)
        kind.normalise(given, full, number, errors)
        if len(errors) == before:
            parsed.append((number, given, full))
    existing = {getattr(o, kind.key): o for o in (await session.scalars(select(kind.model))).all()}
    _check_unique(kind, parsed, existing, errors)
    plan: list[tuple[int, dict[str, Any], Any]] = []
    for number, given, full in parsed:
        current = existing.get(full[kind.key])
        if current is None:
            plan.append((number, full, None))
            continue
        changes = {k: v for k, v in given.items() if getattr(current, k) != v}
        for meter in ("odometer_m", "engine_hours_s"):
            if meter in changes and changes[meter] < getattr(current, meter):
                errors.append(RowError(number, meter, f"{meter} cannot go backwards on import"))
        if changes:
            plan.append((number, changes, current))
        else:
            result.unchanged += 1
    if errors:
        errors.sort(key=lambda e: (e.row, e.field or ""))
        raise ImportRefused(errors)
    result.created = sum(1 for _n, _v, current in plan if current is None)
    result.updated = len(plan) - result.created
    if dry_run or not plan:
        return result
    await _write(session, actor, kind, plan)
    return result


def _check_unique(
    kind: _Kind,
    parsed: list[tuple[int, dict[str, Any], dict[str, Any]]],
    existing: dict[Any, Any],
    errors: list[RowError],
) -> None:
    """Within the file and against the other stored objects: keys and unique columns."""
    seen: dict[Any, int] = {}
    for number, _given, full in parsed:
        key = full[kind.key]
        if key in seen:
            errors.append(RowError(number, kind.key, f"{key} is also on row {seen[key]}"))
        seen.setdefault(key, number)
    for columns in kind.unique:
        owners = {tuple(getattr(o, c) for c in columns): k for k, o in existing.items()}
        in_file: dict[tuple[Any, ...], int] = {}
        for number, _given, full in parsed:
            if not all(c in full for c in columns):
                continue
            value = tuple(full[c] for c in columns)
            owner = owners.get(value)
            if owner is not None and owner != full[kind.key]:
                errors.append(RowError(number, columns[0], f"{' '.join(value)} belongs to {owner}"))
            if value in in_file:
                errors.append(
                    RowError(
                        number, columns[0], f"{' '.join(value)} is also on row {in_file[value]}"
                    )
                )
            in_file.setdefault(value, number)


async def _write(
    session: AsyncSession, actor: Actor, kind: _Kind, plan: list[tuple[int, dict[str, Any], Any]]
) -> None:
    created = [kind.model(**values) for _n, values, current in plan if current is None]
    await toolkit.create_many(session, actor, created, entity=kind.entity)
    if kind is VEHICLES:
        readings = [
            MeterReading(
                vehicle_id=v.id,
                read_at=actor.now(),
                odometer_m=v.odometer_m,
                engine_hours_s=v.engine_hours_s,
                source="manual",
                note="imported",
                recorded_by=actor.user_id,
            )
            for v in created
            if v.odometer_m or v.engine_hours_s
        ]
        session.add_all(readings)
    for _n, changes, current in plan:
        if current is None:
            continue
        before = audit.snapshot(current)
        for k, v in changes.items():
            setattr(current, k, v)
        audit.record(
            session,
            actor,
            action="import",
            entity_type=kind.entity,
            entity_id=current.id,
            changes=audit.diff(before, audit.snapshot(current)),
        )
    await toolkit.commit(session, what=f"the {kind.entity} import")
