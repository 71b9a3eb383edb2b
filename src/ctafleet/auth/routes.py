from __future__ import annotations

import uuid

from fastapi import APIRouter, Depends, Response, status

from ctafleet.api.etag import if_match_version, versioned
from ctafleet.api.pagination import ListParams, Page, Sorting, list_params, list_response
from ctafleet.auth import service, users
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
from ctafleet.db.toolkit import IfMatch
from ctafleet.kernel.context import Actor

router = APIRouter(prefix="/auth", tags=["auth"])
users_router = APIRouter(prefix="/users", tags=["users"])


def _request_actor(ctx: PublicCtx) -> Actor:
    return Actor.anonymous(
        request_id=ctx.request_id, client_ip=ctx.client_ip, clock=ctx.state.clock
    )


@router.post("/login", response_model=TokenPair, summary="Log in with e-mail and password")
async def login(
    body: LoginRequest, ctx: PublicCtx = Depends(public(rate_limited=True))
) -> TokenPair:
    async with ctx.state.db.system_session() as session:
        return await service.login(
            session=session,
            request=_request_actor(ctx),
            settings=ctx.state.settings.auth,
            email=str(body.email),
            password=body.password,
            totp_code=body.totp_code,
        )


@router.post("/refresh", response_model=TokenPair, summary="Rotate a refresh token")
async def refresh(
    body: RefreshRequest, ctx: PublicCtx = Depends(public(rate_limited=True))
) -> TokenPair:
    async with ctx.state.db.system_session() as session:
        return await service.refresh(
            session=session,
            request=_request_actor(ctx),
            settings=ctx.state.settings.auth,
            refresh_token=body.refresh_token,
        )


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT, summary="End this session")
async def logout(ctx: Ctx = Depends(require(Permission.authenticated))) -> Response:
    await service.logout(session=ctx.session, actor=ctx.actor)
    if ctx.state.session_cache is not None and ctx.actor.session_id is not None:
        ctx.state.session_cache.pop(ctx.actor.session_id, None)
    return Response(status_code=204)


@router.get("/me", response_model=UserRead, summary="The logged-in user")
async def me(ctx: Ctx = Depends(require(Permission.authenticated))) -> User:
    return await ctx.user()


@router.post("/password", status_code=204, summary="Change your password (ends other sessions)")
async def change_password(
    body: PasswordChange, ctx: Ctx = Depends(require(Permission.authenticated))
) -> Response:
    await service.change_password(
        session=ctx.session,
        actor=ctx.actor,
        user=await ctx.user(),
        settings=ctx.state.settings.auth,
        current=body.current_password,
        new=body.new_password,
    )
    ctx.forget_logins(ctx.actor.user_id)  # type: ignore[arg-type]
    return Response(status_code=204)


@router.post("/mfa/setup", response_model=MfaSetup, summary="Start TOTP enrolment")
async def mfa_setup(ctx: Ctx = Depends(require(Permission.authenticated))) -> MfaSetup:
    secret, uri = await service.mfa_setup(
        session=ctx.session, actor=ctx.actor, user=await ctx.user()
    )
    return MfaSetup(secret=secret, otpauth_uri=uri)


@router.post(
    "/mfa/verify",
    response_model=RecoveryCodes,
    summary="Confirm TOTP enrolment; returns recovery codes once",
)
async def mfa_verify(
    body: MfaVerify, ctx: Ctx = Depends(require(Permission.authenticated))
) -> RecoveryCodes:
    codes = await service.mfa_verify(
        session=ctx.session, actor=ctx.actor, user=await ctx.user(), code=body.code
    )
    ctx.forget_logins(ctx.actor.user_id)  # type: ignore[arg-type]
    return RecoveryCodes(recovery_codes=codes)


USER_SORTING = Sorting(
    fields={"email": User.email, "created_at": User.created_at, "role": User.role},
    default="email",
    tiebreak=User.id,
)


@users_router.get(
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
    stmt = users.users_query(role=role, is_active=is_active)
    return await list_response(ctx.session, stmt, params, USER_SORTING, UserRead, "users.csv")


@users_router.post("", response_model=UserRead, status_code=201, summary="Create a user")
async def create_user(
    body: UserCreate, response: Response, ctx: Ctx = Depends(require(Permission.users_manage))
) -> User:
    user = await users.create_user(
        session=ctx.session, actor=ctx.actor, settings=ctx.state.settings.auth, data=body
    )
    response.headers["Location"] = f"/api/v1/users/{user.id}"
    return versioned(response, user)


@users_router.get("/{user_id}", response_model=UserRead, summary="Read a user")
async def get_user(
    user_id: uuid.UUID, response: Response, ctx: Ctx = Depends(require(Permission.users_read))
) -> User:
    return versioned(
        response, await users.get_user(session=ctx.session, actor=ctx.actor, user_id=user_id)
    )


@users_router.patch(
    "/{user_id}", response_model=UserRead, summary="Change a user's name, role or status"
)
async def update_user(
    user_id: uuid.UUID,
    body: UserUpdate,
    response: Response,
    if_match: IfMatch | None = Depends(if_match_version),
    ctx: Ctx = Depends(require(Permission.users_manage)),
) -> User:
    user = await users.update_user(
        session=ctx.session, actor=ctx.actor, user_id=user_id, data=body, if_match=if_match
    )
    ctx.forget_logins(user.id)
    return versioned(response, user)


@users_router.post(
    "/{user_id}/mfa/reset",
    response_model=UserRead,
    summary="Turn off another user's two-factor authentication (they enrol again)",
)
async def reset_mfa(
    user_id: uuid.UUID, ctx: Ctx = Depends(require(Permission.users_manage))
) -> User:
    user = await users.reset_mfa(session=ctx.session, actor=ctx.actor, user_id=user_id)
    ctx.forget_logins(user.id)
    return user
