"""ASGI assembly: routers, error handling, middleware, docs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.middleware.trustedhost import TrustedHostMiddleware

from ctafleet import __version__
from ctafleet.api import problems
from ctafleet.api.middleware import (
    BodySizeLimitMiddleware,
    NulCharacterMiddleware,
    RequestContextMiddleware,
    SecurityHeadersMiddleware,
    UnhandledErrorMiddleware,
)
from ctafleet.api.ratelimit import RateLimiter
from ctafleet.api.state import AppState
from ctafleet.audit.routes import router as audit_router
from ctafleet.auth.routes import router as auth_router
from ctafleet.auth.routes import users as users_router
from ctafleet.clock import Clock, SystemClock
from ctafleet.config import Settings, get_settings
from ctafleet.db.engine import Database
from ctafleet.fleet.routes import routers as fleet_routers
from ctafleet.observability import metrics
from ctafleet.observability.health import router as health_router
from ctafleet.observability.logging import configure_logging
from ctafleet.observability.routes import router as metrics_router
from ctafleet.observability.tracing import configure_tracing, fastapi_telemetry, instrument_clients
from ctafleet.tenants.routes import router as tenant_router
from ctafleet.web.routes import router as web_router

API_PREFIX = "/api/v1"
SWAGGER_STATIC = Path(fastapi_offline.__file__).parent / "static"
WEB_STATIC = Path(__file__).parent / "web" / "static"

DESCRIPTION = """\
Fleet management API. Log in with `POST /api/v1/auth/login`, then press **Authorize** and
paste the `access_token`.

Conventions: SI units and UTC; errors are `application/problem+json` with a stable `type` and
a `request_id`; lists are cursor-paginated (`limit` ≤ 500, `cursor`, `sort`, `format=csv`);
updates accept `If-Match` with the `ETag` of the last read (a stale one answers 412).
"""


def create_app(settings: Settings | None = None, *, clock: Clock | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings)
    metrics.set_build_info("api")
    redis = None
    if settings.redis.url:
        import redis.asyncio as aioredis

        redis = aioredis.from_url(settings.redis.url, socket_timeout=2, socket_connect_timeout=2)
    state = AppState(
        settings=settings,
        db=Database(settings.database_url, settings),
        clock=clock or SystemClock(),
        limiter=RateLimiter(settings.redis.url),
        redis=redis,
    )

    tracer_provider = configure_tracing(settings, "api")
    if tracer_provider is not None:
        instrument_clients(tracer_provider, state.db.engine)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        await state.db.dispose()
        if state.redis is not None:
            await state.redis.aclose()
        if tracer_provider is not None:
            tracer_provider.shutdown()

    app = FastAPI(
        title="CTAFleet API",
        version=__version__,
        description=DESCRIPTION,
        docs_url=None,
        redoc_url=None,
        openapi_url="/api/openapi.json",
        lifespan=lifespan,
        debug=settings.debug,
        telemetry=fastapi_telemetry(tracer_provider),  # type: ignore[arg-type]
    )
    app.state.tracer_provider = tracer_provider
    app.state.ctafleet = state
    problems.install(app)

    api = APIRouter(prefix=API_PREFIX)
    for router in (auth_router, users_router, tenant_router, audit_router, *fleet_routers):
        api.include_router(router)
    app.include_router(api)
    app.include_router(health_router)
    app.include_router(metrics_router)
    app.include_router(web_router)
    app.mount("/static/swagger", StaticFiles(directory=SWAGGER_STATIC), name="swagger-static")
    app.mount("/static", StaticFiles(directory=WEB_STATIC), name="static")

    # Added innermost first: the request-context middleware wraps everything.
    app.add_middleware(UnhandledErrorMiddleware, debug=settings.debug)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.http.cors_origins,
        allow_credentials=settings.http.cors_allow_credentials,
        allow_methods=["GET", "POST", "PATCH", "PUT", "DELETE", "OPTIONS"],
        allow_headers=["Authorization", "Content-Type", "If-Match", "X-Request-ID"],
        expose_headers=["ETag", "X-Request-ID", "Retry-After", "Location"],
    )
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=settings.http.trusted_hosts)
    app.add_middleware(NulCharacterMiddleware)
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.http.max_body_bytes)
    app.add_middleware(SecurityHeadersMiddleware)
    app.add_middleware(metrics.HttpMetricsMiddleware)
    app.add_middleware(RequestContextMiddleware)
    return app


def docs_page() -> HTMLResponse:
    # Self-hosted Swagger UI with an external init script: works offline and under a strict CSP.
    return HTMLResponse(
        """<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>CTAFleet API</title><link rel="stylesheet" href="/static/swagger/swagger-ui.css">
</head><body><div id="swagger-ui"></div>
<script src="/static/swagger/swagger-ui-bundle.js"></script>
<script src="/static/swagger-init.js"></script></body></html>"""
    )
