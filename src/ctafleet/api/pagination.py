"""Cursor (keyset) pagination, sorting by documented fields, and CSV export of lists."""

from __future__ import annotations

import base64
import binascii
import csv
import io
import json
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Generic, TypeVar

from fastapi import Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from sqlalchemy import Select, and_, or_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from ctafleet.api.problems import Problem

T = TypeVar("T")
MAX_LIMIT = 500


class PageInfo(BaseModel):
    next_cursor: str | None
    has_more: bool


class Page(BaseModel, Generic[T]):
    data: list[T]
    pagination: PageInfo


@dataclass(frozen=True)
class ListParams:
    limit: int
    cursor: str | None
    sort: str | None
    format: str


def list_params(
    limit: int = Query(50, ge=1, le=MAX_LIMIT, description="Page size (at most 500)."),
    cursor: str | None = Query(
        None, max_length=512, description="`next_cursor` of the previous page."
    ),
    sort: str | None = Query(
        None,
        max_length=64,
        pattern=r"^-?[a-z_]+$",
        description="Sort field; prefix with `-` for descending. See each list's fields.",
    ),
    format: str = Query(
        "json", pattern="^(json|csv)$", description="`csv` streams every matching row as CSV."
    ),
) -> ListParams:
    return ListParams(limit=limit, cursor=cursor, sort=sort, format=format)


def _to_json(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def _from_json(value: Any, column: InstrumentedAttribute[Any]) -> Any:
    if value is None:
        return None
    py = column.type.python_type
    if py is datetime:
        return datetime.fromisoformat(value)
    if py is date:
        return date.fromisoformat(value)
    if py is uuid.UUID:
        return uuid.UUID(value)
    if py is int and isinstance(value, int):
        return value
    if py is str and isinstance(value, str):
        return value
    if py is float and isinstance(value, int | float):
        return value
    raise ValueError("cursor value has the wrong type")


def encode_cursor(sort: str, values: Sequence[Any]) -> str:
    raw = json.dumps({"s": sort, "v": [_to_json(v) for v in values]}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _bad_cursor() -> Problem:
    return Problem(400, "invalid-cursor", "the cursor is malformed or belongs to another sort")


def decode_cursor(cursor: str, sort: str) -> list[Any]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise _bad_cursor() from exc
    if not isinstance(data, dict) or data.get("s") != sort or not isinstance(data.get("v"), list):
        raise _bad_cursor()
    return list(data["v"])


@dataclass(frozen=True)
class Sorting:
    """The fields a list may be sorted by (non-null columns) and its default."""

    fields: dict[str, InstrumentedAttribute[Any]]
    default: str
    tiebreak: InstrumentedAttribute[Any]

    def describe(self) -> str:
        return ", ".join(sorted(self.fields))


async def paginate(
    session: AsyncSession, stmt: Select[Any], params: ListParams, sorting: Sorting
) -> tuple[list[Any], PageInfo]:
    sort = params.sort or sorting.default
    descending = sort.startswith("-")
    name = sort.lstrip("-")
    column = sorting.fields.get(name)
    if column is None:
        raise Problem(
            400, "invalid-sort", f"cannot sort by {name!r}; sortable fields: {sorting.describe()}"
        )
    tie = sorting.tiebreak
    if params.cursor:
        raw = decode_cursor(params.cursor, sort)
        if len(raw) != 2:
            raise _bad_cursor()
        try:
            value, last_id = _from_json(raw[0], column), _from_json(raw[1], tie)
        except (ValueError, TypeError) as exc:
            raise _bad_cursor() from exc
        if descending:
            stmt = stmt.where(or_(column < value, and_(column == value, tie < last_id)))
        else:
            stmt = stmt.where(or_(column > value, and_(column == value, tie > last_id)))
    order = (column.desc(), tie.desc()) if descending else (column.asc(), tie.asc())
    rows = list((await session.scalars(stmt.order_by(*order).limit(params.limit + 1))).all())
    has_more = len(rows) > params.limit
    rows = rows[: params.limit]
    next_cursor = None
    if has_more and rows:
        last = rows[-1]
        next_cursor = encode_cursor(sort, [getattr(last, column.key), getattr(last, tie.key)])
    return rows, PageInfo(next_cursor=next_cursor, has_more=has_more)


async def stream_all(
    session: AsyncSession, stmt: Select[Any], params: ListParams, sorting: Sorting
) -> AsyncIterator[Any]:
    """Every row of the list, page by page (used by CSV export)."""
    page = ListParams(limit=MAX_LIMIT, cursor=None, sort=params.sort, format="json")
    while True:
        rows, info = await paginate(session, stmt, page, sorting)
        for row in rows:
            yield row
        if not info.has_more:
            return
        page = ListParams(limit=MAX_LIMIT, cursor=info.next_cursor, sort=params.sort, format="json")


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, default=str, separators=(",", ":"))
    text = str(_to_json(value))
    # Spreadsheet formula injection: a cell starting with these is executed by Excel/Sheets.
    if text and text[0] in "=+-@\t\r" and not _is_number(text):
        return "'" + text
    return text


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def csv_response(
    rows: AsyncIterator[Any],
    schema: type[BaseModel],
    filename: str,
    to_model: Callable[[Any], BaseModel] | None = None,
) -> StreamingResponse:
    columns = list(schema.model_fields)

    async def generate() -> AsyncIterator[str]:
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(columns)
        async for row in rows:
            model = to_model(row) if to_model else schema.model_validate(row)
            data = model.model_dump(mode="json")
            writer.writerow([_csv_cell(data.get(c)) for c in columns])
            if buf.tell() > 65536:
                yield buf.getvalue()
                buf.seek(0)
                buf.truncate()
        yield buf.getvalue()

    return StreamingResponse(
        generate(),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="{filename}"'},
    )
