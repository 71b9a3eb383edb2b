"""Route dependencies stay cheap: FastAPI runs a plain-function dependency in a worker thread
(a hop that costs more than most dependencies' work) and wraps a generator dependency in an
exit stack; every dependency here is a coroutine function returning its value."""

from __future__ import annotations

import inspect

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from ctafleet.app import create_app
from tests.kit.app import Api


def _calls(dependant: Dependant) -> list[object]:
    found: list[object] = []
    for dep in dependant.dependencies:
        found.append(dep.call)
        found += _calls(dep)
    return found


async def test_every_route_dependency_is_a_plain_coroutine(api: Api) -> None:
    app = create_app(api.settings, clock=api.clock)
    try:
        checked, offending = 0, set()
        for route in app.routes:
            if not isinstance(route, APIRoute):
                continue
            for call in _calls(route.dependant):
                checked += 1
                if not inspect.iscoroutinefunction(call):
                    offending.add(f"{route.path}: {getattr(call, '__qualname__', call)}")
    finally:
        await app.state.ctafleet.db.dispose()
    assert checked > 50
    assert sorted(offending) == []
