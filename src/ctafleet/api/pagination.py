"""Cursor (keyset) pagination, sorting by documented fields, and CSV export of lists."""

from __future__ import annotations

import base64
import binascii
import csv
import io
import json
import math
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Generic, TypeVar

import orjson
from fastapi import Header, Query
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, Field
from sqlalchemy import BigInteger, Select, SmallInteger, TypeDecorator, and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute
from sqlalchemy.types import TypeEngine

from ctafleet.api.problems import Problem
from ctafleet.db import toolkit

T = TypeVar("T")
MAX_LIMIT = 500
# Room for the longest sortable value (100 four-byte characters) with its id, in base64.
MAX_CURSOR = 1024


class PageInfo(BaseModel):
    next_cursor: str | None
    has_more: bool
    total: int | None = Field(
        None, description="Every matching row, all pages: only with `count=true`."
    )


class Page(BaseModel, Generic[T]):
    data: list[T]
    pagination: PageInfo


@dataclass(frozen=True)
class ListParams:
    limit: int
    cursor: str | None
    sort: str | None
    format: str
    count: bool = False


async def list_params(
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
    format: str | None = Query(
        None,
        pattern="^(json|csv)$",
        description="`csv` streams every matching row as CSV (as does `Accept: text/csv`); "
        "default `json`.",
    ),
    count: bool = Query(False, description="Also count every matching row (`total`)."),
    accept: str | None = Header(None, include_in_schema=False),
) -> ListParams:
    # Async though it awaits nothing: a plain function runs in a worker thread.
    if format is None:
        first = (accept or "").split(",")[0].split(";")[0].strip().lower()
        format = "csv" if first == "text/csv" else "json"
    return ListParams(limit=limit, cursor=cursor, sort=sort, format=format, count=count)


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


def _order(
    stmt: Select[Any], params: ListParams, sorting: Sorting
) -> tuple[Select[Any], str, InstrumentedAttribute[Any]]:
    """The statement with the cursor's keyset condition and the sort order applied."""
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
    return stmt.order_by(*order).limit(params.limit + 1), sort, column


async def paginate(
    session: AsyncSession, stmt: Select[Any], params: ListParams, sorting: Sorting
) -> tuple[list[Any], PageInfo]:
    """One page of ORM objects."""
    ordered, sort, column = _order(stmt, params, sorting)
    rows = list((await session.scalars(ordered)).all())
    has_more = len(rows) > params.limit
    rows = rows[: params.limit]
    next_cursor = None
    if has_more and rows:
        last = rows[-1]
        tie = sorting.tiebreak
        next_cursor = encode_cursor(sort, [getattr(last, column.key), getattr(last, tie.key)])
    return rows, PageInfo(next_cursor=next_cursor, has_more=has_more)


# Fills in a page's computed fields (names of users, say), one query for the whole page.
AddFields = Callable[[AsyncSession, list[dict[str, Any]]], Awaitable[None]]


def read_columns(
    stmt: Select[Any], schema: type[BaseModel], computed: Sequence[str] = ()
) -> list[str] | None:
    """The names of `schema`'s fields (but the `computed` ones) when `stmt` selects one
    table's rows and each is one of its columns; None otherwise (read as ORM objects)."""
    descriptions = stmt.column_descriptions
    if len(descriptions) != 1:
        return None
    entity = descriptions[0].get("entity")
    if entity is None or descriptions[0].get("expr") is not entity:
        return None
    table = entity.__table__
    names = [name for name in schema.model_fields if name not in computed]
    return names if all(name in table.c for name in names) else None


async def page_rows(
    session: AsyncSession,
    stmt: Select[Any],
    params: ListParams,
    sorting: Sorting,
    names: list[str],
) -> tuple[list[dict[str, Any]], PageInfo]:
    """One page as plain rows (`names` of each) of values in their JSON form (an id may be its
    text), read without building ORM objects or Python values the JSON does not need: nothing
    here is written, and loading objects costs several times the query for a page of them."""
    ordered, sort, column = _order(stmt, params, sorting)
    table = stmt.column_descriptions[0]["entity"].__table__
    keys = list(dict.fromkeys([*names, column.key, sorting.tiebreak.key]))
    result = await toolkit.raw_rows(session, ordered, table, keys)
    has_more = len(result) > params.limit
    result = result[: params.limit]
    rows: list[dict[str, Any]] = []
    next_cursor = None
    if result:
        width = len(names)  # the page's fields come first, in order
        rows = [dict(zip(names, row[:width], strict=True)) for row in result]
        if has_more:
            last = result[-1]
            next_cursor = encode_cursor(
                sort, [last[keys.index(column.key)], last[keys.index(sorting.tiebreak.key)]]
            )
    return rows, PageInfo(next_cursor=next_cursor, has_more=has_more)


def stream_all(
    session: AsyncSession,
    stmt: Select[Any],
    params: ListParams,
    sorting: Sorting,
    *,
    page_size: int = MAX_LIMIT,
    schema: type[BaseModel] | None = None,
    computed: Sequence[str] = (),
    add: AddFields | None = None,
) -> AsyncIterator[Any]:
    """Every row of the list, page by page (used by CSV export): ORM objects, or with
    `schema` plain rows of its fields.

    The sort is checked now, not at the first row: by then a streaming response has sent its
    200 status, and a bad request could only break the download half-way.
    """
    _resolve_sort(params, sorting)
    columns = read_columns(stmt, schema, computed) if schema is not None else None

    async def rows() -> AsyncIterator[Any]:
        page = ListParams(limit=page_size, cursor=None, sort=params.sort, format="json")
        while True:
            if columns is not None:
                batch, info = await page_rows(session, stmt, page, sorting, columns)
            elif schema is not None:
                objects, info = await paginate(session, stmt, page, sorting)
                batch = [_plain_row(schema, o, computed) for o in objects]
            else:
                batch, info = await paginate(session, stmt, page, sorting)
            if add is not None:
                await add(session, batch)
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
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list | float):
        return orjson.dumps(value, default=_plain, option=orjson.OPT_UTC_Z).decode()
    text = value.isoformat().replace("+00:00", "Z") if isinstance(value, datetime) else str(value)
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
    rows: AsyncIterator[dict[str, Any]],
    columns: list[str],
    filename: str,
    session: AsyncSession | None = None,
) -> StreamingResponse:
    """Streams `rows` as CSV; closes `session` (the request's) once the last row is out."""

    async def generate() -> AsyncIterator[str]:
        try:
            buf = io.StringIO()
            writer = csv.writer(buf)
            writer.writerow(columns)
            async for row in rows:
                writer.writerow([_csv_cell(row.get(c)) for c in columns])
                if buf.tell() > 65536:
                    yield buf.getvalue()
                    buf.seek(0)
                    buf.truncate()
            yield buf.getvalue()
        finally:
            if session is not None:
                await session.close()

    return StreamingResponse(
        generate(),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="{filename}"'},
    )


def _plain(value: Any) -> str:
    # asyncpg's own UUID type, Decimal: their text is what pydantic writes too.
    return str(value)


def json_response(content: Any, status_code: int = 200, headers: Any = None) -> Response:
    """JSON rendered straight from plain values (UUIDs, UTC datetimes as `...Z`, dates), as
    pydantic renders the same fields, without building and validating models first."""
    return Response(
        orjson.dumps(content, default=_plain, option=orjson.OPT_UTC_Z),
        status_code=status_code,
        headers=headers,
        media_type="application/json",
    )


def _plain_row(schema: type[BaseModel], obj: Any, computed: Sequence[str]) -> dict[str, Any]:
    return {name: None if name in computed else getattr(obj, name) for name in schema.model_fields}


async def list_response(
    session: AsyncSession,
    stmt: Select[Any],
    params: ListParams,
    sorting: Sorting,
    schema: type[BaseModel],
    filename: str,
    *,
    computed: Sequence[str] = (),
    add: AddFields | None = None,
) -> Response:
    """A list route's answer: one page as `Page[schema]`, or every row as CSV.

    When every field of `schema` is a column of the listed table (the usual case), rows are
    read as plain tuples and rendered straight to JSON: no ORM objects, no model validation.
    """
    if params.format == "csv":
        rows = stream_all(session, stmt, params, sorting, schema=schema, computed=computed, add=add)
        return csv_response(rows, list(schema.model_fields), filename, session)
    columns = read_columns(stmt, schema, computed)
    if columns is None:
        objects, info = await paginate(session, stmt, params, sorting)
        data = [_plain_row(schema, o, computed) for o in objects]
    else:
        data, info = await page_rows(session, stmt, params, sorting, columns)
    if add is not None:
        await add(session, data)
    # In the schema's order, as pydantic would render them.
    if computed:
        order = list(schema.model_fields)
        data = [{name: row.get(name) for name in order} for row in data]
    total = None
    if params.count:
        counted = select(func.count()).select_from(stmt.order_by(None).subquery())
        total = (await toolkit.rows(session, counted))[0][0]
    return json_response(
        {
            "data": data,
            "pagination": {
                "next_cursor": info.next_cursor,
                "has_more": info.has_more,
                "total": total,
            },
        }
    )
