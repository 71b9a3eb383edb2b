"""Single sign-on routes: the browser's way through the provider, linking a provider account,
and the tenant admin's configuration."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import RedirectResponse

from ctafleet.api.etag import if_match_version, set_etag
from ctafleet.api.state import AppState
from ctafleet.auth.deps import Ctx, PublicCtx, public, require
from ctafleet.auth.permissions import Permission
from ctafleet.auth.schemas import TokenPair
from ctafleet.auth.sso import service
from ctafleet.auth.sso.provider import Providers
from ctafleet.auth.sso.schemas import SsoConfigRead, SsoConfigWrite, SsoLoginStarted
from ctafleet.db.toolkit import IfMatch
from ctafleet.kernel.context import Actor
from ctafleet.kernel.errors import NotFound
from ctafleet.tenants.models import Tenant
from ctafleet.tenants.schemas import SLUG

router = APIRouter(prefix="/auth/oidc", tags=["auth"])
config_router = APIRouter(prefix="/tenant/sso", tags=["tenant"])


def providers(state: AppState) -> Providers:
    """The process's provider cache (discovery documents, signing keys), made at first use."""
    if state.oidc is None:
        state.oidc = Providers(state.settings.oidc, state.clock)
    found: Providers = state.oidc
    return found


def _request_actor(ctx: PublicCtx) -> Actor:
    return Actor.anonymous(
        request_id=ctx.request_id, client_ip=ctx.client_ip, clock=ctx.state.clock
    )


def _set_browser_cookie(response: Response, state: AppState, browser_id: str) -> None:
    # Lax, not Strict: the provider's redirect back is a cross-site top-level navigation,
    # which must carry it. Only the callback ever reads it.
    response.set_cookie(
        service.BROWSER_COOKIE,
        browser_id,
        max_age=state.settings.oidc.state_ttl_s,
        path=service.CALLBACK_PATH,
        secure=state.settings.public_url.startswith("https://"),
        httponly=True,
        samesite="lax",
    )


@router.get(
    "/{tenant_slug}/login",
    status_code=302,
    response_class=RedirectResponse,
    summary="Start signing in with the organisation's identity provider (redirects there)",
    responses={302: {"description": "To the identity provider's sign-in page"}},
)
async def start_login(
    tenant_slug: str,
    request: Request,
    ctx: PublicCtx = Depends(public(rate_limited=True)),
) -> RedirectResponse:
    if not SLUG.match(tenant_slug):
        raise NotFound("single sign-on for this organisation")
    browser_id = service.new_browser_id(request.cookies.get(service.BROWSER_COOKIE))
    async with ctx.state.db.system_session() as session:
        started = await service.start_login(
            session=session,
            request=_request_actor(ctx),
            settings=ctx.state.settings,
            providers=providers(ctx.state),
            tenant_slug=tenant_slug,
            browser_id=browser_id,
        )
    response = RedirectResponse(started.authorization_url, status_code=302)
    _set_browser_cookie(response, ctx.state, started.browser_id)
    return response


@router.get(
    "/callback",
    response_model=TokenPair,
    summary="The identity provider's redirect back: the token pair of a new session",
)
async def callback(
    request: Request,
    state: str | None = Query(None, max_length=200),
    code: str | None = Query(None, max_length=4096),
    error: str | None = Query(None, max_length=200),
    iss: str | None = Query(None, max_length=500),
    ctx: PublicCtx = Depends(public(rate_limited=True)),
) -> TokenPair:
    async with ctx.state.db.system_session() as session:
        return await service.finish_login(
            session=session,
            request=_request_actor(ctx),
            settings=ctx.state.settings,
            providers=providers(ctx.state),
            state=state,
            code=code,
            error=error,
            iss=iss,
            browser_id=request.cookies.get(service.BROWSER_COOKIE),
        )


@router.post(
    "/link",
    response_model=SsoLoginStarted,
    summary="Link your account to your identity provider account: open the returned URL in "
    "this browser",
)
async def link(
    request: Request, response: Response, ctx: Ctx = Depends(require(Permission.authenticated))
) -> SsoLoginStarted:
    tenant = await ctx.session.get(Tenant, ctx.actor.tenant_id)
    assert tenant is not None
    browser_id = service.new_browser_id(request.cookies.get(service.BROWSER_COOKIE))
    async with ctx.state.db.system_session() as session:
        started = await service.start_login(
            session=session,
            request=ctx.actor,
            settings=ctx.state.settings,
            providers=providers(ctx.state),
            tenant_slug=tenant.slug,
            browser_id=browser_id,
            link_user_id=ctx.actor.user_id,
        )
    _set_browser_cookie(response, ctx.state, started.browser_id)
    return SsoLoginStarted(authorization_url=started.authorization_url)


@config_router.get(
    "", response_model=SsoConfigRead, summary="The organisation's single sign-on configuration"
)
async def get_config(
    response: Response, ctx: Ctx = Depends(require(Permission.tenant_manage))
) -> SsoConfigRead:
    config = await service.get_config(session=ctx.session, actor=ctx.actor)
    tenant = await ctx.session.get(Tenant, ctx.actor.tenant_id)
    assert tenant is not None
    set_etag(response, config.version)
    return service.read_model(ctx.state.settings, tenant, config)


@config_router.put(
    "",
    response_model=SsoConfigRead,
    summary="Set the organisation's single sign-on configuration (the provider is checked)",
)
async def put_config(
    body: SsoConfigWrite,
    response: Response,
    if_match: IfMatch | None = Depends(if_match_version),
    ctx: Ctx = Depends(require(Permission.tenant_manage)),
) -> SsoConfigRead:
    tenant, config = await service.put_config(
        session=ctx.session,
        actor=ctx.actor,
        settings=ctx.state.settings,
        providers=providers(ctx.state),
        data=body,
        if_match=if_match,
    )
    set_etag(response, config.version)
    return service.read_model(ctx.state.settings, tenant, config)
