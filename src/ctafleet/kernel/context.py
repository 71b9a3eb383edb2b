"""Who is acting, in which tenant, and when: handed to every service function."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime

from ctafleet.kernel.clock import Clock, SystemClock

SYSTEM_ROLE = "system"
ANONYMOUS_ROLE = "anonymous"
NO_TENANT = uuid.UUID(int=0)
_SYSTEM_CLOCK = SystemClock()


@dataclass(frozen=True, slots=True)
class Actor:
    """The caller as services see it: a user of one tenant, or the platform itself.

    The tenant is the one a database session opened for this actor is bound to (row-level
    security and the service layer's tenant filter both read it from there, see
    `ctafleet.db.scope`); `own_records_only` is decided by the permission matrix when the actor
    is built, so services need not know the roles.
    """

    tenant_id: uuid.UUID
    user_id: uuid.UUID | None
    role: str
    own_records_only: bool = False
    session_id: uuid.UUID | None = None
    request_id: str | None = None
    client_ip: str | None = None
    clock: Clock = field(default=_SYSTEM_CLOCK, compare=False, repr=False)

    @classmethod
    def system(cls, tenant_id: uuid.UUID, *, clock: Clock | None = None) -> Actor:
        """The platform acting inside a tenant (CLI, seeding, scheduled jobs)."""
        return cls(
            tenant_id=tenant_id, user_id=None, role=SYSTEM_ROLE, clock=clock or _SYSTEM_CLOCK
        )

    @classmethod
    def anonymous(
        cls, *, request_id: str | None, client_ip: str | None, clock: Clock | None = None
    ) -> Actor:
        """A caller not yet known (login, token refresh): only the request's address, id and
        clock, for the audit events such a call writes in the tenant it turns out to be."""
        return cls(
            tenant_id=NO_TENANT,
            user_id=None,
            role=ANONYMOUS_ROLE,
            request_id=request_id,
            client_ip=client_ip,
            clock=clock or _SYSTEM_CLOCK,
        )

    @property
    def is_system(self) -> bool:
        return self.user_id is None and self.role == SYSTEM_ROLE

    def now(self) -> datetime:
        return self.clock.now()

    def with_request(self, *, request_id: str | None, client_ip: str | None) -> Actor:
        return replace(self, request_id=request_id, client_ip=client_ip)
