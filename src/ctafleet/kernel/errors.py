"""What a service can refuse, in domain terms. api/ alone turns these into problem+json; the CLI
prints them. Each carries a stable slug (the problem `type`) and a message for people."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """Base of every refusal a service raises. `extra` adds fields to the problem body."""

    default_slug = "error"

    def __init__(self, detail: str, *, slug: str | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.slug = slug or self.default_slug
        self.extra = extra


class NotFound(DomainError):
    """The object does not exist, or belongs to another tenant (never said which)."""

    default_slug = "not-found"

    def __init__(self, entity: str = "resource") -> None:
        super().__init__(f"{entity} not found")
        self.entity = entity


class Conflict(DomainError):
    """The change contradicts the current state (a duplicate, an overlap, a lost race)."""

    default_slug = "conflict"

    def __init__(self, slug: str, detail: str, **extra: Any) -> None:
        super().__init__(detail, slug=slug, **extra)


class PreconditionFailed(DomainError):
    """The object changed since the caller read it (If-Match with a stale version)."""

    default_slug = "precondition-failed"


class Invalid(DomainError):
    """A value is not acceptable. `field` names it (dotted for nested values), or is None when
    the problem lies in a combination of values; `reason` is a whole sentence for people."""

    default_slug = "validation-error"

    def __init__(self, field: str | None, reason: str, *, slug: str | None = None) -> None:
        super().__init__(reason, slug=slug)
        self.field = field
        self.reason = reason


class Unauthenticated(DomainError):
    """The credentials (password, code, token) are missing, wrong or expired."""

    default_slug = "unauthorized"


class Forbidden(DomainError):
    """Who the caller is is known; they may not do this."""

    default_slug = "forbidden"


class Unavailable(DomainError):
    """A service the request depends on (an identity provider) cannot be reached or answered
    nonsense: not the caller's fault, worth a retry later."""

    default_slug = "unavailable"
