"""Cursor pagination, sorting, filtering and CSV export of the fleet lists."""

from __future__ import annotations

import base64
import contextlib
import csv
import functools
import io
import json
import uuid
from collections.abc import Callable
from datetime import date
from typing import Any

import pytest

from ctafleet.api import pagination
from ctafleet.api.pagination import ListParams, decode_cursor, encode_cursor, stream_all
from ctafleet.api.problems import Problem
from ctafleet.fleet.vehicles import routes, service
from ctafleet.fleet.vehicles.schemas import VehicleRead
from tests.kit.app import Api, TenantUsers
from tests.kit.factories import new_driver, new_vehicle
from tests.kit.problems import assert_problem

V = "/api/v1/vehicles"
SOME_ID = "6f1c8a2e-1d2b-4c3d-8e4f-5a6b7c8d9e0f"


def raw_cursor(payload: Any) -> str:
    """A cursor as a client could forge it."""
    text = json.dumps(payload, separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


# --- unit: cursor encoding and CSV cells -------------------------------------------------


def test_cursor_round_trip() -> None:
    cursor = encode_cursor("-created_at", [date(2024, 2, 29), uuid.UUID(SOME_ID)])
    assert "=" not in cursor
    assert decode_cursor(cursor, "-created_at") == ["2024-02-29", SOME_ID]
    with pytest.raises(Problem) as exc:
        decode_cursor(cursor, "created_at")
    assert (exc.value.status, exc.value.slug) == (400, "invalid-cursor")


@pytest.mark.parametrize(
    "cursor", ["", "!!!!", "abc", "a", raw_cursor([1, 2]), raw_cursor({"s": "x", "v": "ab"})]
)
def test_malformed_cursors_are_400(cursor: str) -> None:
    with pytest.raises(Problem) as exc:
        decode_cursor(cursor, "x")
    assert (exc.value.status, exc.value.slug) == (400, "invalid-cursor")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('=HYPERLINK("http://evil")', '\'=HYPERLINK("http://evil")'),
        ("+SUM(A1:A9)", "'+SUM(A1:A9)"),
        ("-2+3+cmd|' /C calc'!A0", "'-2+3+cmd|' /C calc'!A0"),
        ("@SUM(1)", "'@SUM(1)"),
        ("\t=1", "'\t=1"),
        ("\r=1", "'\r=1"),
        ("-87.63", "-87.63"),
        ("+1", "+1"),
        ("plain = text", "plain = text"),
        ("", ""),
        (None, ""),
        (-5, "-5"),
        (True, "true"),
        (False, "false"),
        ({"a": "=1"}, '{"a":"=1"}'),
    ],
)
def test_csv_cells_neutralise_formulas(value: Any, expected: str) -> None:
    assert pagination._csv_cell(value) == expected


# --- walking pages -----------------------------------------------------------------------


async def walk(
    api: Api, t: TenantUsers, path: str, limit: int, role: str = "admin", **params: Any
) -> list[dict[str, Any]]:
    """Every item of a list, following next_cursor; checks the page invariants on the way."""
    items: list[dict[str, Any]] = []
    cursor = None
    for _ in range(1000):
        query = {**params, "limit": limit, **({"cursor": cursor} if cursor else {})}
        r = await api.client.get(path, params=query, headers=t.headers(role))
        assert r.status_code == 200, r.text
        page = r.json()
        info = page["pagination"]
        items.extend(page["data"])
        if not info["has_more"]:
            assert info["next_cursor"] is None
            assert len(page["data"]) <= limit
            return items
        assert len(page["data"]) == limit
        assert info["next_cursor"]
        cursor = info["next_cursor"]
    raise AssertionError("pagination did not end")


def by(*fields: str, reverse: bool = False) -> Callable[[list[dict[str, Any]]], list[str]]:
    """The expected order of ids: these fields, then the id as the tiebreak."""

    def order(items: list[dict[str, Any]]) -> list[str]:
        ranked = sorted(
            items, key=lambda i: (*[i[f] for f in fields], uuid.UUID(i["id"])), reverse=reverse
        )
        return [i["id"] for i in ranked]

    return order


async def make_fleet(api: Api, t: TenantUsers) -> list[dict[str, Any]]:
    """Eleven vehicles inserted out of order, with repeated years to exercise the tiebreak."""
    vehicles = []
    for i in (7, 2, 9, 0, 5, 10, 3, 8, 1, 6, 4):
        vehicles.append(
            await new_vehicle(
                api,
                t,
                n=1000 + i,
                unit_number=f"K{i:02d}",
                plate=f"PL{(i * 7) % 11:03d}",
                year=2015 + i % 3,
                odometer_m=1000 * (i % 4),
            )
        )
    return vehicles


SORTS: list[tuple[str, Callable[[list[dict[str, Any]]], list[str]]]] = [
    ("unit_number", by("unit_number")),
    ("-unit_number", by("unit_number", reverse=True)),
    ("created_at", by("created_at")),
    ("-created_at", by("created_at", reverse=True)),
    ("year", by("year")),
    ("-year", by("year", reverse=True)),
    ("-odometer_m", by("odometer_m", reverse=True)),
    ("plate", by("plate")),
    ("updated_at", by("updated_at")),
]


async def test_walking_pages_yields_every_vehicle_once_in_order(api: Api) -> None:
    t = await api.tenant(roles=["admin"])
    other = await api.tenant(roles=["admin"])
    await new_vehicle(api, other, unit_number="K05")
    vehicles = await make_fleet(api, t)
    everything = {v["id"] for v in vehicles}
    for sort, expected in SORTS:
        for limit in (3, 4):
            items = await walk(api, t, V, limit, sort=sort)
            ids = [i["id"] for i in items]
            assert len(ids) == len(set(ids)) == len(vehicles), (sort, limit)
            assert set(ids) == everything, sort
            assert ids == expected(items), sort
    # The default sort is unit_number; one page of 500 holds everything.
    r = await api.client.get(V, params={"limit": 500}, headers=t.headers())
    assert [v["unit_number"] for v in r.json()["data"]] == [f"K{i:02d}" for i in range(11)]
    assert r.json()["pagination"] == {"next_cursor": None, "has_more": False, "total": None}


async def test_a_new_row_does_not_shift_pages(api: Api) -> None:
    t = await api.tenant(roles=["admin"])
    await make_fleet(api, t)
    r = await api.client.get(V, params={"limit": 5}, headers=t.headers())
    first = [v["unit_number"] for v in r.json()["data"]]
    cursor = r.json()["pagination"]["next_cursor"]
    await new_vehicle(api, t, unit_number="K00A")  # sorts inside the page already read
    r = await api.client.get(V, params={"limit": 5, "cursor": cursor}, headers=t.headers())
    second = [v["unit_number"] for v in r.json()["data"]]
    assert first == ["K00", "K01", "K02", "K03", "K04"]
    assert second == ["K05", "K06", "K07", "K08", "K09"]


async def test_limits(api: Api) -> None:
    t = await api.tenant(roles=["viewer"])
    for limit in ("0", "501", "-1", "ten", "1.5"):
        r = await api.client.get(V, params={"limit": limit}, headers=t.headers("viewer"))
        assert_problem(r, 422, "validation-error")
    for limit in ("1", "500"):
        r = await api.client.get(V, params={"limit": limit}, headers=t.headers("viewer"))
        assert r.status_code == 200, r.text


FORGED_CURSORS = [
    "!!!!",
    "abc",
    "eyJz",
    raw_cursor([]),
    raw_cursor({"s": "unit_number"}),
    raw_cursor({"s": "unit_number", "v": ["K01"]}),
    raw_cursor({"s": "unit_number", "v": ["K01", SOME_ID, 3]}),
    raw_cursor({"s": "unit_number", "v": ["K01", 123]}),
    raw_cursor({"s": "unit_number", "v": ["K01", ["x"]]}),
    raw_cursor({"s": "unit_number", "v": ["K01", "not-a-uuid"]}),
    raw_cursor({"s": "unit_number", "v": [None, SOME_ID]}),
    raw_cursor({"s": "unit_number", "v": [17, SOME_ID]}),
    raw_cursor({"s": "unit_number", "v": ["K\u0000", SOME_ID]}),
    raw_cursor({"s": "unit_number", "v": ["\ud800", SOME_ID]}),
    raw_cursor({"s": "-created_at", "v": ["2026-01-01T00:00:00", SOME_ID]}),
    raw_cursor({"s": "-created_at", "v": ["0001-01-01T00:00:00+01:00", SOME_ID]}),
    raw_cursor({"s": "-created_at", "v": ["yesterday", SOME_ID]}),
    raw_cursor({"s": "-created_at", "v": [1700000000, SOME_ID]}),
    raw_cursor({"s": "year", "v": [2**40, SOME_ID]}),
    raw_cursor({"s": "year", "v": [True, SOME_ID]}),
    raw_cursor({"s": "year", "v": ["2020", SOME_ID]}),
    raw_cursor({"s": "year", "v": [2020.5, SOME_ID]}),
    raw_cursor({"s": "-odometer_m", "v": [2**70, SOME_ID]}),
]


async def test_forged_or_broken_cursors_are_400(api: Api) -> None:
    t = await api.tenant(roles=["viewer"])
    for cursor in FORGED_CURSORS:
        sort = "unit_number"
        with contextlib.suppress(ValueError, TypeError, KeyError):
            sort = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))["s"]
        r = await api.client.get(
            V, params={"cursor": cursor, "sort": sort}, headers=t.headers("viewer")
        )
        assert_problem(r, 400, "invalid-cursor")


async def test_cursor_belongs_to_its_sort(api: Api) -> None:
    t = await api.tenant(roles=["admin"])
    await make_fleet(api, t)
    r = await api.client.get(V, params={"limit": 2, "sort": "unit_number"}, headers=t.headers())
    cursor = r.json()["pagination"]["next_cursor"]
    for sort in ("-unit_number", "year", "created_at"):
        r = await api.client.get(
            V, params={"limit": 2, "sort": sort, "cursor": cursor}, headers=t.headers()
        )
        assert_problem(r, 400, "invalid-cursor")
    # unit_number is the default: the same cursor continues the list without an explicit sort.
    r = await api.client.get(V, params={"limit": 2, "cursor": cursor}, headers=t.headers())
    assert [v["unit_number"] for v in r.json()["data"]] == ["K02", "K03"]


async def test_sort_fields(api: Api) -> None:
    t = await api.tenant(roles=["viewer"])
    for sort in ("colour", "-colour", "notes", "tenant_id", "id"):
        r = await api.client.get(V, params={"sort": sort}, headers=t.headers("viewer"))
        problem = assert_problem(r, 400, "invalid-sort")
        assert "unit_number" in problem["detail"]
    for sort in ("Unit", "--year", "unit number", "year;drop"):
        r = await api.client.get(V, params={"sort": sort}, headers=t.headers("viewer"))
        assert_problem(r, 422, "validation-error")


# --- filters -----------------------------------------------------------------------------


async def test_filters(api: Api) -> None:
    t = await api.tenant(roles=["admin"])
    other = await api.tenant(roles=["admin"])
    specs = [
        ("AB%1", "active", "truck", "Ford", "Roads", "diesel"),
        ("ABX1", "in_shop", "truck", "Ford", "Roads", "diesel"),
        ("A_C1", "active", "van", "Volvo", "Parks", "gasoline"),
        ("AXC1", "retired", "van", "Volvo", "Parks", "electric"),
        ("A\\B1", "active", "car", "Tesla", "Parks", "electric"),
        ("ZZ1", "in_shop", "bus", "Ford", "Transit", "diesel"),
    ]
    ids = {}
    for n, (unit, status, vtype, make, dept, fuel) in enumerate(specs):
        v = await new_vehicle(
            api,
            t,
            n=2000 + n,
            unit_number=unit,
            plate=f"FLT{n}",
            status=status,
            vehicle_type=vtype,
            make=make,
            department=dept,
            fuel_type=fuel,
        )
        ids[v["id"]] = unit
    await new_vehicle(api, other, n=3000, unit_number="AB%1", status="active", vehicle_type="truck")

    async def units(**params: Any) -> set[str]:
        r = await api.client.get(V, params={**params, "limit": 500}, headers=t.headers())
        assert r.status_code == 200, r.text
        return {ids[v["id"]] for v in r.json()["data"]}

    assert await units(status="active") == {"AB%1", "A_C1", "A\\B1"}
    assert await units(status="in_shop", vehicle_type="truck") == {"ABX1"}
    assert await units(vehicle_type="van") == {"A_C1", "AXC1"}
    assert await units(make="Ford", fuel_type="diesel") == {"AB%1", "ABX1", "ZZ1"}
    assert await units(department="Parks", status="retired") == {"AXC1"}
    # `q` is a case-insensitive prefix of unit number, plate or VIN; % and _ are literal.
    assert await units(q="ab") == {"AB%1", "ABX1"}
    assert await units(q="ab%") == {"AB%1"}
    assert await units(q="A_") == {"A_C1"}
    assert await units(q="a_c") == {"A_C1"}
    assert await units(q="%") == set()
    assert await units(q="_") == set()
    assert await units(q="A\\") == {"A\\B1"}
    assert await units(q="X1") == set()  # inside "ABX1", not a prefix
    assert await units(q="flt3") == {"AXC1"}  # plate
    r = await api.client.get(f"{V}/{next(iter(ids))}", headers=t.headers())
    assert await units(q=r.json()["vin"][:10].lower()) == {r.json()["unit_number"]}

    for bad in (
        {"status": "stolen"},
        {"vehicle_type": "ufo"},
        {"q": ""},
        {"q": "x" * 33},
        {"q": "A\u0000"},
        {"make": "\u0000"},
        {"department": "P\u0000"},
    ):
        r = await api.client.get(V, params=bad, headers=t.headers())
        assert_problem(r, 422, "validation-error")


# --- CSV export --------------------------------------------------------------------------


def parse_csv(text: str) -> list[dict[str, str]]:
    """A vehicles export: the header is exactly the fields of VehicleRead."""
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == list(VehicleRead.model_fields)
    return [dict(zip(rows[0], row, strict=True)) for row in rows[1:]]


async def test_csv_export(api: Api) -> None:
    t = await api.tenant(roles=["admin"])
    evil = await new_vehicle(
        api,
        t,
        unit_number="C1",
        notes='=HYPERLINK("http://evil.example","x")',
        department="+SUM(A1:A9)",
        make="@cmd",
        model="-2+3",
        home_name='Depot, "North"\nGate 2',
        home_lat=41.88,
        home_lon=-87.63,
    )
    plain = [await new_vehicle(api, t, unit_number=f"C{i}") for i in range(2, 5)]
    await new_vehicle(api, t, unit_number="C9", status="retired")

    r = await api.client.get(
        V, params={"format": "csv", "status": "active", "sort": "-unit_number"}, headers=t.headers()
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/csv")
    assert r.headers["content-disposition"] == 'attachment; filename="vehicles.csv"'
    header = next(csv.reader(io.StringIO(r.text)))
    assert header == list(VehicleRead.model_fields)
    rows = parse_csv(r.text)
    assert [row["unit_number"] for row in rows] == ["C4", "C3", "C2", "C1"]
    assert {row["id"] for row in rows} == {evil["id"], *(p["id"] for p in plain)}

    row = rows[-1]
    assert row["notes"] == "'" + evil["notes"]
    assert row["department"] == "'+SUM(A1:A9)"
    assert row["make"] == "'@cmd"
    assert row["model"] == "'-2+3"
    assert row["home_name"] == 'Depot, "North"\nGate 2'
    assert row["home_lon"] == "-87.63"  # a number, not a formula
    assert row["home_lat"] == "41.88"
    assert row["tank_capacity_l"] == ""
    assert row["vin"] == evil["vin"]
    assert row["odometer_m"] == str(evil["odometer_m"])
    assert row["created_at"] == evil["created_at"]

    # CSV ignores the page size: every matching row, whatever the limit.
    r = await api.client.get(V, params={"format": "csv", "limit": 1}, headers=t.headers())
    assert len(parse_csv(r.text)) == 5


async def test_csv_export_spans_internal_pages(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    t = await api.tenant(roles=["admin"])
    vehicles = await make_fleet(api, t)
    monkeypatch.setattr(pagination, "stream_all", functools.partial(stream_all, page_size=2))
    for sort, expected in SORTS[:4]:
        r = await api.client.get(V, params={"format": "csv", "sort": sort}, headers=t.headers())
        assert r.status_code == 200, r.text
        rows = parse_csv(r.text)
        assert len(rows) == len(vehicles)
        assert [row["id"] for row in rows] == expected(vehicles), sort


async def test_csv_export_rejects_a_bad_sort_before_streaming(api: Api) -> None:
    t = await api.tenant(roles=["viewer"])
    r = await api.client.get(
        V, params={"format": "csv", "sort": "colour"}, headers=t.headers("viewer")
    )
    assert_problem(r, 400, "invalid-sort")
    r = await api.client.get(V, params={"format": "xlsx"}, headers=t.headers("viewer"))
    assert_problem(r, 422, "validation-error")


async def test_stream_all_pages_through_everything(api: Api) -> None:
    t = await api.tenant(roles=["admin"])
    vehicles = await make_fleet(api, t)
    actor = t.actor("admin")
    for page_size in (1, 2, 5, 11, 12):
        for sort, expected in SORTS:
            params = ListParams(limit=1, cursor=None, sort=sort, format="csv")
            async with api.db.session(actor) as session:
                stmt = service.vehicles_query()
                rows = [
                    r
                    async for r in stream_all(
                        session, stmt, params, routes.SORTING, page_size=page_size
                    )
                ]
            assert [str(r.id) for r in rows] == expected(vehicles), (sort, page_size)
    with pytest.raises(Problem) as exc:
        stream_all(
            None,  # type: ignore[arg-type]
            service.vehicles_query(),
            ListParams(limit=1, cursor=None, sort="-colour", format="csv"),
            routes.SORTING,
        )
    assert exc.value.status == 400


async def test_other_lists_page_and_export(api: Api) -> None:
    t = await api.tenant(roles=["admin"])
    drivers = [
        await new_driver(api, t, n=i, last_name=f"Name{i % 3}", licence_expiry=f"203{i % 4}-06-01")
        for i in range(7)
    ]
    for sort, expected in (
        ("last_name", by("last_name")),
        ("-licence_expiry", by("licence_expiry", reverse=True)),
        ("employee_number", by("employee_number")),
    ):
        items = await walk(api, t, "/api/v1/drivers", 2, sort=sort)
        assert [i["id"] for i in items] == expected(drivers), sort
    r = await api.client.get(
        "/api/v1/drivers", params={"format": "csv", "sort": "-created_at"}, headers=t.headers()
    )
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [row["id"] for row in rows] == by("created_at", reverse=True)(drivers)
    r = await api.client.get(
        "/api/v1/drivers", params={"sort": "licence_number"}, headers=t.headers()
    )
    assert_problem(r, 400, "invalid-sort")
    r = await api.client.get(
        "/api/v1/drivers",
        params={"cursor": raw_cursor({"s": "last_name", "v": ["A", 1]})},
        headers=t.headers(),
    )
    assert_problem(r, 400, "invalid-cursor")
    r = await api.client.get(
        "/api/v1/drivers",
        params={
            "sort": "licence_expiry",
            "cursor": raw_cursor({"s": "licence_expiry", "v": ["2030-13-01", SOME_ID]}),
        },
        headers=t.headers(),
    )
    assert_problem(r, 400, "invalid-cursor")


async def test_cursors_of_long_non_latin_values_fit_the_next_request(api: Api) -> None:
    t = await api.tenant(roles=["admin"])
    names = ["\U0001f69a" * 100, "\u0416" * 100, "\u5f20" * 100, "\u0416" * 99 + "A"]
    drivers = [await new_driver(api, t, n=7000 + i, last_name=name) for i, name in enumerate(names)]
    # The order of these scripts is the database collation's; whatever it is, both directions
    # walk every driver once, each the reverse of the other.
    up = [i["id"] for i in await walk(api, t, "/api/v1/drivers", 1, sort="last_name")]
    down = [i["id"] for i in await walk(api, t, "/api/v1/drivers", 1, sort="-last_name")]
    assert sorted(up) == sorted(d["id"] for d in drivers)
    assert down == up[::-1]
    r = await api.client.get(
        "/api/v1/drivers", params={"limit": 1, "sort": "last_name"}, headers=t.headers()
    )
    assert len(r.json()["pagination"]["next_cursor"]) <= pagination.MAX_CURSOR
