"""Fuzzing the ingest: whatever a device sends, the batch parser accepts or refuses it point
by point, and neither endpoint answers a 5xx (through the whole app, on both databases).

The OsmAnd decoder alone is fuzzed in tests/telematics/test_osmand.py."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Coroutine
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ctafleet.telematics.ingest import batch
from tests.kit.app import Api, TenantUsers
from tests.telematics.ingest.kit import OSMAND, device, drain

NOW = datetime(2026, 1, 1, tzinfo=UTC)
FIELDS = sorted(batch._KNOWN | {"colour", "speed_kmh", ""})
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=50)
    | st.sampled_from(["2026-01-01T00:00:00Z", "2025-12-31 23:59:59", "1767225600", "nan"])
)
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)
points = st.dictionaries(st.sampled_from(FIELDS), values, max_size=8) | values
documents = (
    st.fixed_dictionaries({"points": st.lists(points, max_size=8)}, optional={"device": values})
    | values
)
FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def _dumps(document: object) -> bytes:
    try:
        return orjson.dumps(document)
    except TypeError:  # integers past 64 bits: what JSON text would still carry
        return repr(document).encode()


bodies = documents.map(_dumps) | st.binary(max_size=200)


@FUZZ
@given(document=documents)
def test_the_parser_accepts_or_refuses_each_point(document: object) -> None:
    body = _dumps(document)
    try:
        parsed = batch.parse(body, now=NOW, max_points=100, device="dev-1")
    except batch.BatchError as exc:
        refused = exc  # the request as a whole: a reason and a message, nothing else
        assert refused.reason in {"bad-json", "bad-batch", "bad-device", "device-mismatch"}
        return
    count = len(document["points"]) if isinstance(document, dict) else 0
    assert len(parsed.points) + len(parsed.rejected) == count
    assert sorted({r.index for r in parsed.rejected}) == [r.index for r in parsed.rejected]
    for point in parsed.points:
        assert point.device_uid == "dev-1"
        assert point.fix_time.tzinfo is not None
        assert point.fix_time <= NOW + batch.FUTURE_TOLERANCE
        if point.lat is not None:
            assert point.lon is not None
            assert -90 <= point.lat <= 90
            assert -180 <= point.lon <= 180
        for number in (point.speed_mps, point.course_deg, point.battery_pct, point.odometer_m):
            assert number is None or (math.isfinite(number) and number >= 0)


@pytest.mark.asyncio
async def test_the_endpoints_never_answer_a_server_error(api: Api, tenant: TenantUsers) -> None:
    d = await device(api, tenant)
    statuses: set[int] = set()
    loop = asyncio.get_running_loop()

    def call(request: Coroutine[Any, Any, httpx.Response]) -> httpx.Response:
        # Hypothesis runs in a thread; each example's request runs on the test's loop.
        return asyncio.run_coroutine_threadsafe(request, loop).result(timeout=60)

    @FUZZ
    @example(body=b'{"points": [{"time": 1767225000, "lat": 1, "lon": 2}]}', content_type="")
    @given(body=bodies, content_type=st.sampled_from(["application/json", "text/plain", ""]))
    def batch_request(body: bytes, content_type: str) -> None:
        r = call(
            api.client.post(
                "/api/v1/telemetry",
                content=body,
                headers={
                    "Authorization": f"Bearer {d['credential']}",
                    "Content-Type": content_type,
                },
            )
        )
        assert r.status_code in (202, 400, 413, 415, 422), r.text
        statuses.add(r.status_code)

    @FUZZ
    @example(query={"id": d["unique_id"], "lat": "41.9", "lon": "-87.6"}, body=b"", method="GET")
    # No credential: 401 on every run, not only when the generator happens to reach it.
    @example(query={"id": "imei-of-nobody", "lat": "41.9", "lon": "-87.6"}, body=b"", method="GET")
    @given(
        query=st.dictionaries(
            st.sampled_from(["id", "lat", "lon", "timestamp", "speed", "batt", "x", "token"]),
            st.text(max_size=30) | st.sampled_from([d["unique_id"], "91", "1e400", "-0"]),
            max_size=6,
        ),
        body=st.binary(max_size=100),
        method=st.sampled_from(["GET", "POST", "PUT"]),
    )
    def osmand_request(query: dict[str, str], body: bytes, method: str) -> None:
        if query.get("id") == d["unique_id"]:
            query = {**query, "token": d["credential"]}
        r = call(api.client.request(method, OSMAND, params=query, content=body))
        assert r.status_code in (200, 400, 401), r.text
        statuses.add(r.status_code)

    await asyncio.to_thread(batch_request)
    await asyncio.to_thread(osmand_request)
    await drain(api)
    assert {202, 400, 200, 401} <= statuses  # both sides of each were reached
