"""RFC 9457 problem details: every API error, with a stable `type` and the request id."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.orm.exc import StaleDataError
from starlette.exceptions import HTTPException as StarletteHTTPException

from ctafleet.api.requestid import current_request_id
from ctafleet.kernel.errors import (
    Conflict,
    DomainError,
    Forbidden,
    Invalid,
    NotFound,
    PreconditionFailed,
    Unauthenticated,
    Unavailable,
)

PROBLEM_MEDIA_TYPE = "application/problem+json"
log = structlog.get_logger("ctafleet.api")

_STATUS_SLUGS = {
    400: ("bad-request", "Bad request"),
    401: ("unauthorized", "Authentication required"),
    403: ("forbidden", "Forbidden"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    406: ("not-acceptable", "Not acceptable"),
    409: ("conflict", "Conflict"),
    412: ("precondition-failed", "Precondition failed"),
    413: ("payload-too-large", "Payload too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
    422: ("validation-error", "Validation error"),
    429: ("rate-limited", "Too many requests"),
    500: ("internal-error", "Internal server error"),
    503: ("unavailable", "Service unavailable"),
}


class FieldError(BaseModel):
    loc: list[str | int] = Field(
        description="Where: `body`, `query`, `path` or `header`, then the field names."
    )
    msg: str
    type: str | None = None


class ProblemDetails(BaseModel):
    """RFC 9457 problem details; some problems add fields of their own."""

    model_config = ConfigDict(extra="allow", title="Problem")

    type: str = Field(description="Stable identifier of the kind of problem (`/problems/<slug>`).")
    title: str
    status: int
    detail: str | None = None
    instance: str | None = Field(None, description="The request path.")
    request_id: str | None = Field(description="Also in the server's logs; quote it in reports.")
    errors: list[FieldError] | None = Field(
        None, description="Validation problems only: each field that did not match."
    )


def problem_type(slug: str) -> str:
    return f"/problems/{slug}"


class Problem(Exception):
    """Raise anywhere below a route to answer with problem+json."""

    def __init__(
        self,
        status: int,
        slug: str | None = None,
        detail: str | None = None,
        *,
        title: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        default_slug, default_title = _STATUS_SLUGS.get(status, ("error", "Error"))
        self.status = status
        self.slug = slug or default_slug
        self.title = title or default_title
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra
        super().__init__(detail or self.title)


# The one place domain errors become HTTP statuses.
DOMAIN_STATUS: dict[type[DomainError], int] = {
    NotFound: 404,
    Conflict: 409,
    PreconditionFailed: 412,
    Invalid: 422,
    Unauthenticated: 401,
    Forbidden: 403,
    Unavailable: 503,
}


def domain_status(exc: DomainError) -> int:
    for kind in type(exc).__mro__:
        status = DOMAIN_STATUS.get(kind)
        if status is not None:
            return status
    return 400


def domain_problem(exc: DomainError) -> Problem:
    status = domain_status(exc)
    extra = dict(exc.extra)
    if isinstance(exc, Invalid) and exc.field:
        extra.setdefault(
            "errors",
            [{"loc": ["body", *exc.field.split(".")], "msg": exc.reason, "type": exc.slug}],
        )
    return Problem(status, exc.slug, exc.detail, **extra)


def problem_response(
    request: Request | None,
    status: int,
    slug: str,
    title: str,
    detail: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {"type": problem_type(slug), "title": title, "status": status}
    if detail:
        body["detail"] = detail
    if request is not None:
        body["instance"] = request.url.path
    body["request_id"] = current_request_id()
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


def _clean_errors(errors: Any) -> list[dict[str, Any]]:
    cleaned = []
    for err in errors:
        item = {
            "loc": list(err.get("loc", ())),
            "msg": str(err.get("msg", "")),
            "type": err.get("type"),
        }
        cleaned.append(item)
    return cleaned


def install(
    app: FastAPI, *, before_validation: Callable[[Request], Awaitable[None]] | None = None
) -> None:
    """The exception handlers. `before_validation` runs before a validation error is answered
    and may raise the problem that takes precedence (authentication, see auth/deps.py)."""
    document(app)

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(
            request, exc.status, exc.slug, exc.title, exc.detail, exc.headers, **exc.extra
        )

    @app.exception_handler(DomainError)
    async def _domain(request: Request, exc: DomainError) -> JSONResponse:
        p = domain_problem(exc)
        return problem_response(request, p.status, p.slug, p.title, p.detail, p.headers, **p.extra)

    # Safety nets: services map these to specific problems; a path that forgets must still
    # answer a conflict, not a 500.
    @app.exception_handler(StaleDataError)
    async def _stale(request: Request, exc: StaleDataError) -> JSONResponse:
        log.warning("unmapped_concurrent_update", path=request.url.path)
        return problem_response(
            request,
            409,
            "concurrent-update",
            "Conflict",
            "the object changed while you were changing it; fetch it again and retry",
        )

    @app.exception_handler(IntegrityError)
    async def _integrity(request: Request, exc: IntegrityError) -> JSONResponse:
        log.warning(
            "unmapped_integrity_error", path=request.url.path, error=type(exc.orig).__name__
        )
        return problem_response(
            request, 409, "conflict", "Conflict", "the change conflicts with existing data"
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        if before_validation is not None:
            try:
                await before_validation(request)
            except Problem as refused:
                return problem_response(
                    request,
                    refused.status,
                    refused.slug,
                    refused.title,
                    refused.detail,
                    refused.headers,
                    **refused.extra,
                )
        errors = _clean_errors(exc.errors())
        return problem_response(
            request,
            422,
            "validation-error",
            "Validation error",
            "the request did not match the schema; see `errors`",
            errors=errors,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        slug, title = _STATUS_SLUGS.get(exc.status_code, ("error", "Error"))
        # Starlette's own details ("Not Found") only repeat the title.
        detail = (
            exc.detail
            if isinstance(exc.detail, str) and exc.detail.lower() != title.lower()
            else None
        )
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(allowed_methods(request)) or headers.get("Allow", "")
        return problem_response(request, exc.status_code, slug, title, detail, headers)

    # A value that passed validation but cannot be represented: a date past the calendar's end
    # once in UTC, text PostgreSQL cannot store. The request's fault, so a 4xx, never a 500; the
    # schema that let it through deserves a fix, hence the warning with the traceback.
    @app.exception_handler(OverflowError)
    async def _overflow(request: Request, exc: OverflowError) -> JSONResponse:
        log.warning("value_out_of_range", path=request.url.path, exc_info=exc)
        return _unstorable(request, "a value is out of the range that can be stored")

    @app.exception_handler(StatementError)
    async def _statement(request: Request, exc: StatementError) -> JSONResponse:
        sqlstate = str(getattr(exc.orig, "sqlstate", None) or "")
        if isinstance(exc.orig, OverflowError | ValueError) or sqlstate.startswith("22"):
            log.warning("unstorable_value", path=request.url.path, sqlstate=sqlstate, exc_info=exc)
            return _unstorable(request, "a value cannot be stored (out of range or invalid text)")
        raise exc

    @app.exception_handler(Exception)
    async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
        # Last resort for errors outside the middleware stack; see UnhandledErrorMiddleware.
        log.exception("unhandled_error", path=request.url.path)
        return internal_error_response(request)


def _unstorable(request: Request, detail: str) -> JSONResponse:
    return problem_response(request, 422, "invalid-value", "Validation error", detail)


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path (Starlette names only the first route's)."""
    from fastapi.routing import iter_route_contexts

    path = request.url.path
    methods: set[str] = set()
    for route in iter_route_contexts(request.app.routes):
        regex = getattr(route, "path_regex", None)
        if route.methods and regex is not None and regex.match(path):
            methods |= route.methods
    return sorted(methods)


def internal_error_response(request: Request | None) -> JSONResponse:
    return problem_response(
        request,
        500,
        "internal-error",
        "Internal server error",
        "an unexpected error occurred; quote the request id when reporting it",
    )


def document(app: FastAPI) -> None:
    """Describes error answers in the OpenAPI schema as they are: problem+json, any 4xx or 5xx.

    FastAPI documents only its own 422 (as `application/json` with another shape); clients and
    schema-driven tests need the real contract.
    """
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        schema = generate()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        if "Problem" not in components:
            _add_problem_responses(schema, components)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _add_problem_responses(schema: dict[str, Any], components: dict[str, Any]) -> None:
    model = ProblemDetails.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(model.pop("$defs", {}))
    components["Problem"] = model
    ref = {"$ref": "#/components/schemas/Problem"}
    problem = {"content": {PROBLEM_MEDIA_TYPE: {"schema": ref}}}
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses = operation["responses"]
            if "422" in responses:
                responses["422"] = {
                    "description": "The request does not match the schema",
                    **problem,
                }
            responses.setdefault("4XX", {"description": "Client error", **problem})
            responses.setdefault("5XX", {"description": "Server error", **problem})
            params = operation.get("parameters", [])
            if any(p.get("in") == "query" and p.get("name") == "format" for p in params):
                # `format=csv` streams the same list as CSV.
                for status, response in responses.items():
                    if status.startswith("2") and "content" in response:
                        response["content"]["text/csv"] = {"schema": {"type": "string"}}
    text = str(schema.get("paths"))
    for unused in ("HTTPValidationError", "ValidationError"):
        if f"#/components/schemas/{unused}" not in text:
            components.pop(unused, None)
