"""No list costs a query per row: the statements of a page are as many for twelve objects as
for two (a request costs a fixed handful: the page, its extras, a total when asked for)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event

from tests.kit.app import Api, TenantUsers
from tests.kit.factories import new_assignment, new_device

LISTS = [
    "/api/v1/vehicles",
    "/api/v1/drivers",
    "/api/v1/assignments",
    "/api/v1/devices",
    "/api/v1/users",
    "/api/v1/audit-events",
]


@contextmanager
def counted(api: Api) -> Iterator[list[str]]:
    statements: list[str] = []

    def before(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if not statement.lstrip().upper().startswith(("SELECT SET_CONFIG", "BEGIN")):
            statements.append(statement)

    engine = api.db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", before)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", before)


async def _statements(api: Api, t: TenantUsers, path: str, **params: str) -> int:
    await api.client.get(path, params=params, headers=t.headers())  # warm: login cached
    with counted(api) as statements:
        r = await api.client.get(path, params=params, headers=t.headers())
    assert r.status_code == 200, r.text
    return len(statements)


async def _grow(api: Api, t: TenantUsers, n: int) -> None:
    for _ in range(n):
        await new_assignment(api, t)  # a vehicle, a driver, an assignment and their audit
        await new_device(api, t)


@pytest.mark.parametrize("path", LISTS)
async def test_a_page_costs_the_same_queries_however_many_rows(api: Api, path: str) -> None:
    t = await api.tenant()
    await _grow(api, t, 2)
    small = await _statements(api, t, path)
    await _grow(api, t, 10)
    large = await _statements(api, t, path)
    assert large == small, f"{path}: {small} statements for 2 objects, {large} for 12"
    assert 1 <= small <= 3, f"{path}: {small} statements for one page"
    csv_small = await _statements(api, t, path, format="csv")
    assert csv_small <= 3 + 1, f"{path} as CSV: {csv_small} statements"
