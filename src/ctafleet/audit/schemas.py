from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import Field

from ctafleet.kernel.schemas import ReadModel


class AuditEventRead(ReadModel):
    id: uuid.UUID
    occurred_at: datetime
    actor_user_id: uuid.UUID | None
    actor_email: str | None = Field(
        None, description="The acting user's e-mail (null for the platform or a deleted user)."
    )
    actor_name: str | None = Field(None, description="The acting user's full name.")
    actor_role: str | None
    action: str
    entity_type: str
    entity_id: str | None
    changes: dict[str, object]
    request_id: str | None
    client_ip: str | None
