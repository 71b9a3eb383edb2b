from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from ctafleet.kernel.roles import RoleName
from ctafleet.kernel.schemas import ReadModel, Strict


class RoleMapping(Strict):
    value: str = Field(
        min_length=1,
        max_length=255,
        description="A value of the ID token's `groups` or `roles` claim: an Entra ID group's "
        "object id, or an app role's value.",
    )
    role: RoleName


class SsoConfigWrite(Strict):
    enabled: bool = True
    issuer: str = Field(
        min_length=8,
        max_length=500,
        description="The provider's issuer; Entra ID: "
        "`https://login.microsoftonline.com/<directory id>/v2.0`. Its "
        "`/.well-known/openid-configuration` must be reachable.",
    )
    client_id: str = Field(min_length=1, max_length=255, description="The application's id.")
    client_secret: str | None = Field(
        None,
        min_length=1,
        max_length=500,
        description="Write-only. Absent: the stored secret is kept. Ignored while the server's "
        "settings hold a secret for this tenant (CTAFLEET_OIDC__CLIENT_SECRETS).",
    )
    entra_tenant_id: str | None = Field(
        None,
        max_length=64,
        description="The directory id the token's `tid` claim must name; taken from an Entra "
        "ID issuer when absent.",
    )
    allow_signup: bool = Field(
        False, description="Create a user at the first sign-in of someone the provider knows."
    )
    default_role: RoleName = Field("viewer", description="Role of a new user no mapping names.")
    role_mappings: list[RoleMapping] = Field(
        default_factory=list,
        max_length=100,
        description="Group or app role → role; the first one the token names wins.",
    )
    sync_roles: bool = Field(
        False,
        description="Set the role from the mappings at every sign-in (not only the first), so "
        "that leaving a group in the directory takes the role away.",
    )
    require_sso: bool = Field(
        False,
        description="Refuse password logins of the tenant's users, except the break-glass admin.",
    )
    break_glass_user_id: uuid.UUID | None = Field(
        None, description="An active admin who may still log in with a password."
    )


class SsoConfigRead(ReadModel):
    enabled: bool
    issuer: str
    client_id: str
    client_secret_set: bool
    client_secret_source: Literal["settings", "tenant"] | None
    entra_tenant_id: str | None
    allow_signup: bool
    default_role: str
    role_mappings: list[RoleMapping]
    sync_roles: bool
    require_sso: bool
    break_glass_user_id: uuid.UUID | None
    login_url: str = Field(description="Where users start signing in.")
    redirect_uri: str = Field(description="The redirect URI to register with the provider.")
    updated_at: datetime
    version: int


class SsoLoginStarted(BaseModel):
    authorization_url: str
