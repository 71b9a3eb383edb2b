"""Access tokens (JWT, HS256 only) and opaque secrets stored as SHA-256 digests."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import jwt

from ctafleet.config import AuthSettings

ALGORITHMS = ["HS256"]  # explicit allow-list: never trust the token's own `alg`
CLOCK_SKEW_S = 30


@dataclass(frozen=True)
class AccessClaims:
    user_id: uuid.UUID
    tenant_id: uuid.UUID
    session_id: uuid.UUID
    role: str
    mfa_pending: bool
    expires: int = 0  # `exp`, seconds since 1970
    not_before: int = 0  # `nbf` (else `iat`)

    def check_times(self, now: datetime) -> None:
        """Against the injected clock: expired, or not valid yet (beyond the clock skew)."""
        ts = now.timestamp()
        if self.expires <= ts:
            raise InvalidToken("token expired")
        if self.not_before > ts + CLOCK_SKEW_S:
            raise InvalidToken("token not yet valid")


class InvalidToken(Exception):
    pass


def issue_access_token(
    settings: AuthSettings, claims: AccessClaims, now: datetime
) -> tuple[str, int]:
    ttl = settings.access_token_ttl_s
    payload: dict[str, Any] = {
        "iss": settings.issuer,
        "aud": settings.audience,
        "sub": str(claims.user_id),
        "tid": str(claims.tenant_id),
        "sid": str(claims.session_id),
        "role": claims.role,
        "iat": int(now.timestamp()),
        "nbf": int(now.timestamp()),
        "exp": int((now + timedelta(seconds=ttl)).timestamp()),
        "jti": secrets.token_hex(8),
    }
    if claims.mfa_pending:
        payload["mfa_pending"] = True
    token = jwt.encode(payload, settings.secret_key.get_secret_value(), algorithm=ALGORITHMS[0])
    return token, ttl


def decode_access_token(settings: AuthSettings, token: str, now: datetime) -> AccessClaims:
    try:
        payload = jwt.decode(
            token,
            settings.secret_key.get_secret_value(),
            algorithms=ALGORITHMS,
            audience=settings.audience,
            issuer=settings.issuer,
            # Time claims are checked against the injected clock below, not the wall clock.
            options={
                "require": ["exp", "iat", "iss", "aud", "sub", "tid", "sid"],
                "verify_exp": False,
                "verify_iat": False,
                "verify_nbf": False,
            },
        )
        if not isinstance(payload["exp"], int):
            raise InvalidToken("token expired")
        claims = AccessClaims(
            user_id=uuid.UUID(payload["sub"]),
            tenant_id=uuid.UUID(payload["tid"]),
            session_id=uuid.UUID(payload["sid"]),
            role=str(payload.get("role", "")),
            mfa_pending=bool(payload.get("mfa_pending", False)),
            expires=payload["exp"],
            not_before=int(payload.get("nbf", payload["iat"])),
        )
    except (jwt.PyJWTError, ValueError, KeyError, TypeError) as exc:
        raise InvalidToken(str(exc)) from exc
    claims.check_times(now)
    return claims


def new_secret(prefix: str) -> str:
    """A 256-bit random secret; the prefix tells a leaked one apart in scanners and logs."""
    return f"{prefix}_{secrets.token_urlsafe(32)}"


def digest(secret: str) -> str:
    # High-entropy secrets need no slow hash: SHA-256 keeps lookups by digest O(1).
    return hashlib.sha256(secret.encode()).hexdigest()
