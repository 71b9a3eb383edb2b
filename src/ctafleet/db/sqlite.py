"""SQLite through aiosqlite with one thread hop per statement.

aiosqlite runs SQLite in a thread of its own and every call into it is a hop: queue the call,
wake the thread, hand the GIL over and back. SQLAlchemy's adapter makes four of them for each
statement (make a cursor, execute, fetch all rows, close the cursor) and one more for each
rollback, including the rollback of a transaction that never began; a read request paid six.
Here a statement is made, run, drained and closed in one call in the thread, and a rollback
with no transaction open costs nothing: two hops for a read request.

This reaches into SQLAlchemy's aiosqlite adapter (`AsyncAdapt_aiosqlite_connection`, whose
cursor class and rollback are replaced) and aiosqlite's call queue (`Connection._execute`), at
the versions the lock files pin; tests/db/test_sqlite.py fails if either changes shape.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from typing import Any

from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
)
from sqlalchemy.util import EMPTY_DICT
from sqlalchemy.util.concurrency import await_


class OneHopCursor(AsyncAdapt_aiosqlite_cursor):
    __slots__ = ("_description", "_lastrowid", "_rowcount")

    def __init__(self, adapt_connection: Any) -> None:
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._cursor = None  # type: ignore[assignment]
        self._soft_closed_memoized = EMPTY_DICT
        self._rows = collections.deque()
        self._description: Any = None
        self._rowcount = -1
        self._lastrowid: int | None = None

    @property
    def description(self) -> Any:
        return self._description

    @property
    def rowcount(self) -> int:
        return self._rowcount

    @property
    def lastrowid(self) -> int:
        return self._lastrowid  # type: ignore[return-value]

    async def _run(self, method: str, operation: Any, parameters: Any) -> None:
        raw = self._connection._conn  # the sqlite3 connection: used only in its thread

        def run() -> tuple[Any, list[Any], int, int | None]:
            cursor = raw.cursor()
            try:
                getattr(cursor, method)(operation, parameters)
                description = cursor.description
                rows = cursor.fetchall() if description else []
                return description, rows, cursor.rowcount, cursor.lastrowid
            finally:
                cursor.close()

        async with self._adapt_connection._execute_mutex:
            result = await self._connection._execute(run)
        self._description, rows, self._rowcount, self._lastrowid = result
        self._rows = collections.deque(rows)

    async def _execute_async(self, operation: Any, parameters: Any) -> Any:
        await self._run("execute", operation, () if parameters is None else parameters)

    async def _executemany_async(self, operation: Any, seq_of_parameters: Sequence[Any]) -> Any:
        await self._run("executemany", operation, seq_of_parameters)

    async def _async_soft_close(self) -> None:
        return  # nothing is open in the thread between calls

    def close(self) -> None:
        self._rows.clear()


def _rollback(self: AsyncAdapt_aiosqlite_connection) -> None:
    # `in_transaction` reads a flag of the sqlite3 connection; nothing else runs on this
    # connection meanwhile (the pool hands it to one user at a time).
    if not self._connection._conn.in_transaction:
        return
    try:
        await_(self._connection.rollback())
    except Exception as error:
        self._handle_exception(error)


def install() -> None:
    """Idempotent: every aiosqlite engine of the process then uses one hop per statement."""
    AsyncAdapt_aiosqlite_connection._cursor_cls = OneHopCursor
    AsyncAdapt_aiosqlite_connection.rollback = _rollback  # type: ignore[method-assign]
