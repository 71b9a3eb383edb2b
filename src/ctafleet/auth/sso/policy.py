"""Whether a tenant's users may still log in with a password (read by the password login)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ctafleet.auth.models import User
from ctafleet.auth.sso.models import SsoConfig
from ctafleet.kernel.roles import Role


async def password_login_refused(*, session: AsyncSession, user: User) -> bool:
    """True when the tenant requires single sign-on and the user is not its break-glass admin.

    A disabled configuration requires nothing: switching sign-on off must not lock everyone
    out. The break-glass account must still be an admin (a demoted one loses the exemption).
    """
    config = (
        await session.scalars(select(SsoConfig).where(SsoConfig.tenant_id == user.tenant_id))
    ).first()
    if config is None or not config.enabled or not config.require_sso:
        return False
    return not (user.id == config.break_glass_user_id and user.role == Role.admin.value)
