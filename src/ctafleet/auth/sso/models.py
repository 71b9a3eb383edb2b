from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from ctafleet.db.base import Base, IdMixin, TenantMixin, TimestampMixin, VersionedMixin


class SsoConfig(IdMixin, TimestampMixin, VersionedMixin, TenantMixin, Base):
    """A tenant's OpenID provider, and how its users are signed in (one per tenant)."""

    __tablename__ = "sso_configs"
    __table_args__ = (UniqueConstraint("tenant_id"),)

    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    issuer: Mapped[str] = mapped_column(String(500))
    client_id: Mapped[str] = mapped_column(String(255))
    # Never returned by the API; audit entries show it as [redacted] (its name says secret).
    client_secret: Mapped[str | None] = mapped_column(String(500), default=None)
    # Entra ID: the directory (tenant) id the token's `tid` claim must name.
    entra_tenant_id: Mapped[str | None] = mapped_column(String(64), default=None)
    allow_signup: Mapped[bool] = mapped_column(Boolean, default=False)
    default_role: Mapped[str] = mapped_column(String(32), default="viewer")
    # [{"value": <group id or app role>, "role": <role>}]: the first that the token names wins.
    role_mappings: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    sync_roles: Mapped[bool] = mapped_column(Boolean, default=False)
    require_sso: Mapped[bool] = mapped_column(Boolean, default=False)
    break_glass_user_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), default=None
    )


class SsoIdentity(IdMixin, TenantMixin, Base):
    """A user as a provider knows them: matched on (issuer, subject), never on e-mail."""

    __tablename__ = "sso_identities"
    __table_args__ = (UniqueConstraint("tenant_id", "issuer", "subject"),)

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    issuer: Mapped[str] = mapped_column(String(500))
    subject: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime]
    last_login_at: Mapped[datetime | None] = mapped_column(default=None)


class SsoLoginState(IdMixin, TenantMixin, Base):
    """A sign-in on its way through the provider: used once, by the browser that started it,
    before it expires. The state and the browser's cookie are kept as SHA-256 digests."""

    __tablename__ = "sso_login_states"

    state_hash: Mapped[str] = mapped_column(String(64), unique=True)
    browser_hash: Mapped[str] = mapped_column(String(64))
    issuer: Mapped[str] = mapped_column(String(500))
    nonce: Mapped[str] = mapped_column(String(128))
    code_verifier: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)
    used_at: Mapped[datetime | None] = mapped_column(default=None)
    # Set when a logged-in user links their provider account: the identity goes to this user.
    link_user_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), default=None
    )
