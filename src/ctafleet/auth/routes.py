from __future__ import annotations

import uuid

from fastapi import APIRouter, Depends, Response, status
from sqlalchemy import select

from ctafleet.api.etag import if_match_version, set_etag
from ctafleet.api.pagination import (
    ListParams,
    Page,
    Sorting,
    list_params,
    list_response,
)
from ctafleet.auth import service
from ctafleet.auth.deps import Ctx, PublicCtx, public, require
from ctafleet.auth.models import User
from ctafleet.auth.permissions import Permission
from ctafleet.auth.schemas import (
    LoginRequest,
    MfaSetup,
    MfaVerify,
    PasswordChange,
    RecoveryCodes,
    RefreshRequest,
    TokenPair,
    UserCreate,
    UserRead,
    UserUpdate,
)
from ctafleet.db.tenancy import get_in_tenant

router = APIRouter(prefix="/auth", tags=["auth"])
users = APIRouter(prefix="/users", tags=["users"])


@router.post("/login", response_model=TokenPair, summary="Log in with e-mail and password")
async def login(
    body: LoginRequest, ctx: PublicCtx = Depends(public(rate_limited=True))
) -> TokenPair:
    return await service.login(
        ctx.state,
        email=str(body.email),
        password=body.password,
        totp_code=body.totp_code,
        ip=ctx.client_ip,
        request_id=ctx.request_id,
    )


@router.post("/refresh", response_model=TokenPair, summary="Rotate a refresh token")
async def refresh(
    body: RefreshRequest, ctx: PublicCtx = Depends(public(rate_limited=True))
) -> TokenPair:
    return await service.refresh(
        ctx.state, refresh_token=body.refresh_token, ip=ctx.client_ip, request_id=ctx.request_id
    )


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT, summary="End this session")
async def logout(ctx: Ctx = Depends(require(Permission.authenticated))) -> Response:
    assert ctx.actor.session_id is not None
    await service.revoke_session(ctx.session, ctx.actor, ctx.actor.session_id, ctx.now, "logout")
    return Response(status_code=204)


@router.get("/me", response_model=UserRead, summary="The logged-in user")
async def me(ctx: Ctx = Depends(require(Permission.authenticated))) -> User:
    return ctx.user


@router.post("/password", status_code=204, summary="Change your password (ends other sessions)")
async def change_password(
    body: PasswordChange, ctx: Ctx = Depends(require(Permission.authenticated))
) -> Response:
    user = await ctx.session.merge(ctx.user)
    await service.change_password(
        ctx.session,
        ctx.actor,
        user,
        ctx.state.settings,
        current=body.current_password,
        new=body.new_password,
        now=ctx.now,
    )
    return Response(status_code=204)


@router.post("/mfa/setup", response_model=MfaSetup, summary="Start TOTP enrolment")
async def mfa_setup(ctx: Ctx = Depends(require(Permission.authenticated))) -> MfaSetup:
    user = await ctx.session.merge(ctx.user)
    secret, uri = await service.mfa_setup(ctx.session, ctx.actor, user)
    return MfaSetup(secret=secret, otpauth_uri=uri)


@router.post(
    "/mfa/verify",
    response_model=RecoveryCodes,
    summary="Confirm TOTP enrolment; returns recovery codes once",
)
async def mfa_verify(
    body: MfaVerify, ctx: Ctx = Depends(require(Permission.authenticated))
) -> RecoveryCodes:
    user = await ctx.session.merge(ctx.user)
    codes = await service.mfa_verify(ctx.session, ctx.actor, user, body.code, ctx.now)
    return RecoveryCodes(recovery_codes=codes)


USER_SORTING = Sorting(
    fields={"email": User.email, "created_at": User.created_at, "role": User.role},
    default="email",
    tiebreak=User.id,
)


@users.get(
    "",
    response_model=Page[UserRead],
    summary="List users",
    description=f"Sortable by: {USER_SORTING.describe()}.",
)
async def list_users(
    role: str | None = None,
    is_active: bool | None = None,
    params: ListParams = Depends(list_params),
    ctx: Ctx = Depends(require(Permission.users_read)),
) -> object:
    stmt = select(User).where(User.tenant_id == ctx.actor.tenant_id)
    if role:
        stmt = stmt.where(User.role == role)
    if is_active is not None:
        stmt = stmt.where(User.is_active == is_active)
    return await list_response(ctx.session, stmt, params, USER_SORTING, UserRead, "users.csv")


@users.post("", response_model=UserRead, status_code=201, summary="Create a user")
async def create_user(
    body: UserCreate, response: Response, ctx: Ctx = Depends(require(Permission.users_manage))
) -> User:
    user = await service.create_user(ctx.session, ctx.actor, ctx.state.settings, body)
    set_etag(response, user.version)
    response.headers["Location"] = f"/api/v1/users/{user.id}"
    return user


@users.get("/{user_id}", response_model=UserRead, summary="Read a user")
async def get_user(
    user_id: uuid.UUID, response: Response, ctx: Ctx = Depends(require(Permission.users_read))
) -> User:
    user = await get_in_tenant(ctx.session, ctx.actor, User, user_id, entity="user")
    set_etag(response, user.version)
    return user


@users.patch("/{user_id}", response_model=UserRead, summary="Change a user's name, role or status")
async def update_user(
    user_id: uuid.UUID,
    body: UserUpdate,
    response: Response,
    if_match: int | None = Depends(if_match_version),
    ctx: Ctx = Depends(require(Permission.users_manage)),
) -> User:
    user = await service.update_user(ctx.session, ctx.actor, user_id, body, if_match, ctx.now)
    set_etag(response, user.version)
    return user


@users.post(
    "/{user_id}/mfa/reset",
    response_model=UserRead,
    summary="Turn off a user's two-factor authentication (they enrol again)",
)
async def reset_mfa(
    user_id: uuid.UUID, ctx: Ctx = Depends(require(Permission.users_manage))
) -> User:
    return await service.reset_mfa(ctx.session, ctx.actor, user_id, ctx.now)
