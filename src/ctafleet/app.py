"""ASGI assembly: routers, error handling, middleware, docs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import fastapi_offline
import structlog
from fastapi import APIRouter, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.routing import APIRoute, APIWebSocketRoute
from fastapi.staticfiles import StaticFiles
from starlette.middleware.trustedhost import TrustedHostMiddleware

from ctafleet import __version__, domains
from ctafleet.api import problems
from ctafleet.api.middleware import EdgeMiddleware, UnhandledErrorMiddleware
from ctafleet.api.ratelimit import RateLimiter
from ctafleet.api.state import AppState, clock_cache
from ctafleet.auth.deps import document_bearer, refuse_before_validation
from ctafleet.config import Settings, get_settings, uses_builtin_key, with_signing_key
from ctafleet.db.engine import Database
from ctafleet.kernel.clock import Clock, SystemClock
from ctafleet.observability import metrics
from ctafleet.observability.health import router as health_router
from ctafleet.observability.logging import configure_logging
from ctafleet.observability.routes import router as metrics_router
from ctafleet.observability.tracing import configure_tracing, fastapi_telemetry, instrument_clients
from ctafleet.telematics.ingest import runtime as telemetry_runtime
from ctafleet.web.routes import router as web_router

API_PREFIX = "/api/v1"
# The JSON telemetry batch: the one route allowed a larger body (telemetry.batch_max_body_bytes).
BATCH_PATH = f"{API_PREFIX}/telemetry"
log = structlog.get_logger("ctafleet.app")
SWAGGER_STATIC = Path(fastapi_offline.__file__).parent / "static"
WEB_STATIC = Path(__file__).parent / "web" / "static"
SESSION_CACHE_SIZE = 10_000
# Verifying an access token's signature costs more than the rest of the check: a token is
# verified once per minute per process, its expiry checked on every request.
TOKEN_CACHE_SIZE = 10_000
TOKEN_CACHE_TTL_S = 60.0

DESCRIPTION = """\
Fleet management API. Log in with `POST /api/v1/auth/login`, then press **Authorize** and
paste the `access_token`.

Conventions: SI units and UTC; errors are `application/problem+json` with a stable `type` and
a `request_id`; lists are cursor-paginated (`limit` ≤ 500, `cursor`, `sort`, `format=csv`);
updates accept `If-Match` with the `ETag` of the last read (a stale one answers 412).
"""


def mount(app: FastAPI, router: APIRouter, prefix: str = "") -> None:
    """Adds the router's routes to the app itself, under `prefix`.

    FastAPI keeps included routers nested and matches a request against each level in turn;
    routes added to the app directly are matched in one flat pass, which is much cheaper for
    every request. The routes keep everything they were declared with.
    """
    for route in router.routes:
        if isinstance(route, APIWebSocketRoute):
            app.add_api_websocket_route(prefix + route.path, route.endpoint, name=route.name)
            continue
        if not isinstance(route, APIRoute):
            raise TypeError(f"only API and WebSocket routes can be mounted, not {route!r}")
        app.add_api_route(
            prefix + route.path,
            route.endpoint,
            response_model=route.response_model,
            status_code=route.status_code,
            tags=route.tags,
            dependencies=route.dependencies,
            summary=route.summary,
            description=route.description,
            response_description=route.response_description,
            responses=route.responses,
            deprecated=route.deprecated,
            methods=sorted(route.methods or ()),
            operation_id=route.operation_id,
            include_in_schema=route.include_in_schema,
            response_class=route.response_class,
            name=route.name,
            openapi_extra=route.openapi_extra,
        )


def create_app(settings: Settings | None = None, *, clock: Clock | None = None) -> FastAPI:
    settings = with_signing_key(settings or get_settings())
    configure_logging(settings)
    if uses_builtin_key(settings):
        log.warning(
            "builtin_signing_key",
            detail="access tokens are signed with the built-in public key; anyone can forge "
            "them (set CTAFLEET_AUTH__SECRET_KEY)",
        )
    metrics.set_build_info("api")
    redis = None
    if settings.redis.url:
        import redis.asyncio as aioredis

        redis = aioredis.from_url(settings.redis.url, socket_timeout=2, socket_connect_timeout=2)
    clock = clock or SystemClock()
    state = AppState(
        settings=settings,
        db=Database(settings.database_url, settings),
        clock=clock,
        limiter=RateLimiter(settings.redis.url),
        redis=redis,
        session_cache=(
            clock_cache(clock, ttl_s=settings.auth.session_cache_ttl_s, maxsize=SESSION_CACHE_SIZE)
            if settings.auth.session_cache_ttl_s > 0
            else None
        ),
        token_cache=clock_cache(clock, ttl_s=TOKEN_CACHE_TTL_S, maxsize=TOKEN_CACHE_SIZE),
        gauge_refreshers=domains.GAUGES,
    )

    state.telemetry = telemetry_runtime.build(settings, state.db, clock, redis)

    tracer_provider = configure_tracing(settings, "api")
    if tracer_provider is not None:
        instrument_clients(tracer_provider, state.db.engine)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        worker = state.telemetry.worker
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop)) if worker is not None else None
        yield
        await state.telemetry.live.close()  # clients are told the server is going away
        if task is not None:
            stop.set()  # the batch in hand is finished and committed; the rest waits
            await task
        await state.db.dispose()
        if state.redis is not None:
            await state.redis.aclose()
        if tracer_provider is not None:
            tracer_provider.shutdown()

    app = CTAFleetApp(
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
    problems.install(app, before_validation=refuse_before_validation)
    document_bearer(app)

    # Probes first: they are the most frequent requests and must stay cheap.
    mount(app, health_router)
    mount(app, metrics_router)
    for router in domains.API_ROUTERS:
        mount(app, router, API_PREFIX)
    mount(app, web_router)
    app.mount("/static/swagger", StaticFiles(directory=SWAGGER_STATIC), name="swagger-static")
    app.mount("/static", StaticFiles(directory=WEB_STATIC), name="static")

    # Added innermost first: the edge wraps everything (CORS answers carry its headers too).
    app.add_middleware(UnhandledErrorMiddleware, debug=settings.debug)
    if settings.http.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.http.cors_origins,
            allow_credentials=settings.http.cors_allow_credentials,
            allow_methods=["GET", "POST", "PATCH", "PUT", "DELETE", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", "If-Match", "X-Request-ID"],
            expose_headers=["ETag", "X-Request-ID", "Retry-After", "Location"],
        )
    if settings.http.trusted_hosts != ["*"]:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=settings.http.trusted_hosts)
    app.add_middleware(
        EdgeMiddleware,
        max_body_bytes=settings.http.max_body_bytes,
        # A full batch (max_batch_points) is larger than any other request.
        body_limits={BATCH_PATH: settings.telemetry.batch_max_body_bytes},
    )
    app.osmand = state.telemetry.osmand
    return app


OSMAND_PATH = "/ingest/osmand"


class CTAFleetApp(FastAPI):
    """FastAPI with the OsmAnd endpoint in front of everything: a phone's position report
    skips FastAPI's own middleware stack, the edge's per-request logging and routing (it is
    counted in ingest_points_total and answers only empty bodies). A middleware cannot do this:
    FastAPI wraps user middleware in its error and body-limit layers, a sixth of the cost of an
    OsmAnd request as profiled."""

    osmand: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and self.osmand is not None:
            path = scope["path"]
            if path.startswith(OSMAND_PATH) and (
                len(path) == len(OSMAND_PATH) or path[len(OSMAND_PATH)] == "/"
            ):
                await self.osmand(scope, receive, send)
                return
        await super().__call__(scope, receive, send)
