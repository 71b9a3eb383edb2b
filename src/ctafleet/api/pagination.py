"""Cursor (keyset) pagination, sorting by documented fields, and CSV export of lists."""

from __future__ import annotations

import base64
import binascii
import csv
import io
import json
import math
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Generic, TypeVar

from fastapi import Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from sqlalchemy import BigInteger, Select, SmallInteger, TypeDecorator, and_, or_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute
from sqlalchemy.types import TypeEngine

from ctafleet.api.problems import Problem

T = TypeVar("T")
MAX_LIMIT = 500
# Room for the longest sortable value (100 four-byte characters) with its id, in base64.
MAX_CURSOR = 1024


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
        None, max_length=MAX_CURSOR, description="`next_cursor` of the previous page."
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


def _column_type(column: InstrumentedAttribute[Any]) -> TypeEngine[Any]:
    # A TypeDecorator (UTCDateTime) reports `object` as its Python type; its impl knows better.
    kind = column.type
    return kind.impl_instance if isinstance(kind, TypeDecorator) else kind


def _int_bits(kind: TypeEngine[Any]) -> int:
    if isinstance(kind, BigInteger):
        return 64
    if isinstance(kind, SmallInteger):
        return 16
    return 32


def _from_json(value: Any, column: InstrumentedAttribute[Any]) -> Any:
    """A cursor value back as the column's type; ValueError for anything the database would
    refuse (a 500), since a cursor is client input and may have been edited."""
    kind = _column_type(column)
    py = kind.python_type
    if py in (datetime, date, uuid.UUID, str) and not isinstance(value, str):
        raise ValueError("cursor value has the wrong type")
    if py is datetime:
        parsed = datetime.fromisoformat(value)
        if parsed.tzinfo is None:
            raise ValueError("cursor timestamp has no time zone")
        return parsed.astimezone(UTC)  # OverflowError at the ends of the calendar
    if py is date:
        return date.fromisoformat(value)
    if py is uuid.UUID:
        return uuid.UUID(value)
    if py is str:
        if "\x00" in value:
            raise ValueError("cursor value holds a NUL character")
        value.encode()  # lone surrogates: UnicodeEncodeError, a ValueError
        return value
    if py is int and isinstance(value, int) and not isinstance(value, bool):
        bits = _int_bits(kind)
        if not -(2 ** (bits - 1)) <= value < 2 ** (bits - 1):
            raise ValueError("cursor value is out of range")
        return value
    if py is float and isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ValueError("cursor value is not finite")
        return float(value)
    raise ValueError("cursor value has the wrong type")


def encode_cursor(sort: str, values: Sequence[Any]) -> str:
    # UTF-8 rather than \u escapes: a non-Latin name would otherwise need up to 12 bytes a
    # character and the cursor could outgrow what the next request may send back.
    raw = json.dumps(
        {"s": sort, "v": [_to_json(v) for v in values]}, separators=(",", ":"), ensure_ascii=False
    )
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


def _resolve_sort(params: ListParams, sorting: Sorting) -> tuple[str, InstrumentedAttribute[Any]]:
    sort = params.sort or sorting.default
    column = sorting.fields.get(sort.lstrip("-"))
    if column is None:
        raise Problem(
            400,
            "invalid-sort",
            f"cannot sort by {sort.lstrip('-')!r}; sortable fields: {sorting.describe()}",
        )
    return sort, column


async def paginate(
    session: AsyncSession, stmt: Select[Any], params: ListParams, sorting: Sorting
) -> tuple[list[Any], PageInfo]:
    sort, column = _resolve_sort(params, sorting)
    descending = sort.startswith("-")
    tie = sorting.tiebreak
    if params.cursor:
        raw = decode_cursor(params.cursor, sort)
        if len(raw) != 2:
            raise _bad_cursor()
        try:
            value, last_id = _from_json(raw[0], column), _from_json(raw[1], tie)
        except (ValueError, TypeError, OverflowError) as exc:
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


def stream_all(
    session: AsyncSession,
    stmt: Select[Any],
    params: ListParams,
    sorting: Sorting,
    *,
    page_size: int = MAX_LIMIT,
) -> AsyncIterator[Any]:
    """Every row of the list, page by page (used by CSV export).

    The sort is checked now, not at the first row: by then a streaming response has sent its
    200 status, and a bad request could only break the download half-way.
    """
    _resolve_sort(params, sorting)

    async def rows() -> AsyncIterator[Any]:
        page = ListParams(limit=page_size, cursor=None, sort=params.sort, format="json")
        while True:
            batch, info = await paginate(session, stmt, page, sorting)
            for row in batch:
                yield row
            if not info.has_more:
                return
            page = ListParams(
                limit=page_size, cursor=info.next_cursor, sort=params.sort, format="json"
            )

    return rows()


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


async def list_response(
    session: AsyncSession,
    stmt: Select[Any],
    params: ListParams,
    sorting: Sorting,
    schema: type[BaseModel],
    filename: str,
) -> Any:
    """A list route's answer: one page as `Page[schema]`, or every row as CSV."""
    if params.format == "csv":
        return csv_response(stream_all(session, stmt, params, sorting), schema, filename)
    rows, info = await paginate(session, stmt, params, sorting)
    return Page[schema](  # type: ignore[valid-type]
        data=[schema.model_validate(r) for r in rows], pagination=info
    )
