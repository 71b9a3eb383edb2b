"""Server-rendered pages. For now: the landing page and the API docs page."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse

from ctafleet import __version__
from ctafleet.auth.deps import PublicCtx, public

router = APIRouter(include_in_schema=False)


@router.get("/")
async def index(_: PublicCtx = Depends(public())) -> HTMLResponse:
    return HTMLResponse(
        f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>CTAFleet</title><link rel="stylesheet" href="/static/style.css">
<link rel="icon" type="image/png" href="/static/swagger/favicon.png"></head><body>
<h1>CTAFleet</h1><p>Fleet management, version {__version__}.</p>
<ul><li><a href="/api/docs">API documentation</a> (log in there with
<code>POST /api/v1/auth/login</code>, then Authorize)</li>
<li><a href="/api/openapi.json">OpenAPI schema</a></li>
<li><a href="/api/health">Health</a></li></ul></body></html>"""
    )


@router.get("/api/docs")
async def api_docs(_: PublicCtx = Depends(public())) -> HTMLResponse:
    # Self-hosted Swagger UI with an external init script: works offline and under a strict CSP.
    return HTMLResponse(
        """<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>CTAFleet API</title><link rel="stylesheet" href="/static/swagger/swagger-ui.css">
<link rel="icon" type="image/png" href="/static/swagger/favicon.png">
</head><body><div id="swagger-ui"></div>
<script src="/static/swagger/swagger-ui-bundle.js"></script>
<script src="/static/swagger-init.js"></script></body></html>"""
    )
