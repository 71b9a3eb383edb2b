from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, EmailStr, Field

from ctafleet.kernel.roles import RoleName
from ctafleet.kernel.schemas import ReadModel, Strict


class LoginRequest(Strict):
    email: EmailStr
    password: str = Field(min_length=1, max_length=256)
    totp_code: str | None = Field(
        None, min_length=6, max_length=20, description="TOTP code or a recovery code."
    )


class RefreshRequest(Strict):
    refresh_token: str = Field(min_length=10, max_length=200)


class TokenPair(BaseModel):
    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 - a token type, not a secret
    expires_in: int
    mfa_enrolment_required: bool = False


class PasswordChange(Strict):
    current_password: str = Field(min_length=1, max_length=256)
    new_password: str = Field(min_length=1, max_length=256)


class MfaSetup(BaseModel):
    secret: str
    otpauth_uri: str


class MfaVerify(Strict):
    code: str = Field(pattern=r"^\d{6}$")


class RecoveryCodes(BaseModel):
    recovery_codes: list[str] = Field(description="Shown once; each works once instead of a code.")


class UserCreate(Strict):
    email: EmailStr
    full_name: str = Field("", max_length=200)
    role: RoleName
    password: str = Field(min_length=1, max_length=256)


class UserUpdate(Strict):
    full_name: str | None = Field(None, max_length=200)
    role: RoleName | None = None
    is_active: bool | None = None


class UserRead(ReadModel):
    id: uuid.UUID
    email: str
    full_name: str
    role: str
    is_active: bool
    totp_enabled: bool
    last_login_at: datetime | None
    created_at: datetime
    updated_at: datetime
    version: int
