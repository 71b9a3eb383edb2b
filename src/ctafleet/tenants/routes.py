from __future__ import annotations

from fastapi import APIRouter, Depends, Response

from ctafleet.api.etag import if_match_version, versioned
from ctafleet.auth.deps import Ctx, require
from ctafleet.auth.permissions import Permission
from ctafleet.db.toolkit import IfMatch
from ctafleet.tenants import service
from ctafleet.tenants.models import Tenant
from ctafleet.tenants.schemas import TenantRead, TenantSettingsUpdate

router = APIRouter(prefix="/tenant", tags=["tenant"])


@router.get("", response_model=TenantRead, summary="Your organisation and its settings")
async def get_tenant(
    response: Response, ctx: Ctx = Depends(require(Permission.tenant_read))
) -> Tenant:
    return versioned(response, await service.get_tenant(session=ctx.session, actor=ctx.actor))


@router.patch(
    "", response_model=TenantRead, summary="Change units, time zone, currency or the MFA policy"
)
async def update_tenant(
    body: TenantSettingsUpdate,
    response: Response,
    if_match: IfMatch | None = Depends(if_match_version),
    ctx: Ctx = Depends(require(Permission.tenant_manage)),
) -> Tenant:
    tenant = await service.update_tenant(
        session=ctx.session, actor=ctx.actor, data=body, if_match=if_match
    )
    return versioned(response, tenant)
