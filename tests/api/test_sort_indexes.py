"""Every field a list may be sorted by has an index that serves the sort within a tenant, so
a page of a sorted list is an index range scan however large the fleet."""

from __future__ import annotations

import pytest

from ctafleet import domains
from ctafleet.api.pagination import Sorting
from ctafleet.audit import routes as audit_routes
from ctafleet.auth import routes as auth_routes
from ctafleet.fleet.assignments import routes as assignment_routes
from ctafleet.fleet.drivers import routes as driver_routes
from ctafleet.fleet.vehicles import routes as vehicle_routes
from ctafleet.telematics import routes as device_routes

SORTINGS: dict[str, Sorting] = {
    "vehicles": vehicle_routes.SORTING,
    "drivers": driver_routes.SORTING,
    "assignments": assignment_routes.SORTING,
    "devices": device_routes.SORTING,
    "users": auth_routes.USER_SORTING,
    "audit": audit_routes.SORTING,
}


def _index_prefixes(table: object) -> set[tuple[str, ...]]:
    prefixes: set[tuple[str, ...]] = set()
    for index in table.indexes:  # type: ignore[attr-defined]
        prefixes.add(tuple(c.name for c in index.columns))
    for constraint in table.constraints:  # type: ignore[attr-defined]
        names = tuple(getattr(c, "name", "") for c in getattr(constraint, "columns", ()))
        if names and constraint.__class__.__name__ in ("UniqueConstraint",):
            prefixes.add(names)
    for column in table.columns:  # type: ignore[attr-defined]
        if column.unique or column.index:
            prefixes.add((column.name,))
    return prefixes


@pytest.mark.parametrize("name", sorted(SORTINGS))
def test_every_sort_field_is_indexed(name: str) -> None:
    domains.metadata()  # every table registered
    sorting = SORTINGS[name]
    for field, column in sorting.fields.items():
        table = column.class_.__table__
        prefixes = _index_prefixes(table)
        served = any(p[:2] == ("tenant_id", column.key) or p[:1] == (column.key,) for p in prefixes)
        assert served, f"{name}: sorting by {field} has no (tenant_id, {column.key}) index"
        assert not table.c[column.key].nullable, f"{name}: {field} is nullable (keyset breaks)"
