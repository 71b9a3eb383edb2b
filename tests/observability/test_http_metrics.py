"""HTTP metrics and access lines are labelled by route template: every served path gets its
own template (the SLI counts them), never the raw path, and only unknown paths `unmatched`."""

from __future__ import annotations

import asyncio

from prometheus_client import generate_latest

from ctafleet.observability.metrics import REGISTRY
from tests.kit.app import Api


def _count(route: str, status: str) -> float:
    for line in generate_latest(REGISTRY).decode().splitlines():
        if (
            line.startswith("ctafleet_http_requests_total{")
            and f'route="{route}"' in line
            and (f'status="{status}"' in line)
        ):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_every_served_path_has_its_template(api: Api) -> None:
    t = await api.tenant(roles=["viewer"])
    cases = [
        ("/api/openapi.json", "/api/openapi.json", "200", {}),
        ("/static/style.css", "/static/{path}", "200", {}),
        ("/api/docs", "/api/docs", "200", {}),
        ("/healthz", "/healthz", "200", {}),
        (
            "/api/v1/vehicles/00000000-0000-0000-0000-000000000000",
            "/api/v1/vehicles/{vehicle_id}",
            "404",
            t.headers("viewer"),
        ),
        ("/no/such/path", "unmatched", "404", {}),
    ]
    for path, template, status, headers in cases:
        before = _count(template, status)
        r = await api.client.get(path, headers=headers)
        assert str(r.status_code) == status, (path, r.status_code)
        # Counted when the request's handling ends, which may be just after the response.
        for _ in range(100):
            if _count(template, status) >= before + 1:
                break
            await asyncio.sleep(0.01)
        assert _count(template, status) >= before + 1, (path, template)


async def test_unknown_methods_are_one_label(api: Api) -> None:
    before = sum(
        float(x.rsplit(" ", 1)[1])
        for x in generate_latest(REGISTRY).decode().splitlines()
        if x.startswith("ctafleet_http_requests_total{") and 'method="OTHER"' in x
    )
    r = await api.client.request("PROPFIND", "/healthz")
    assert r.status_code == 405
    after = sum(
        float(x.rsplit(" ", 1)[1])
        for x in generate_latest(REGISTRY).decode().splitlines()
        if x.startswith("ctafleet_http_requests_total{") and 'method="OTHER"' in x
    )
    assert after == before + 1
