"""Password hashing (Argon2id) and the password policy."""

from __future__ import annotations

from functools import lru_cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from zxcvbn import zxcvbn  # type: ignore[import-untyped]
from zxcvbn.frequency_lists import FREQUENCY_LISTS  # type: ignore[import-untyped]

_hasher = PasswordHasher()  # Argon2id with the library's current RFC 9106 profile
MAX_PASSWORD_LENGTH = 256
ZXCVBN_MAX = 72
# A fixed hash so that an unknown e-mail costs as much as a wrong password (no timing oracle).
# Made at the first login, not at import: it is an Argon2 hash, and start-up should be quick.
_DUMMY_HASH: str | None = None


def _dummy_hash() -> str:
    global _DUMMY_HASH
    if _DUMMY_HASH is None:
        _DUMMY_HASH = _hasher.hash("ctafleet-dummy-password-for-timing")
    return _DUMMY_HASH


def use_test_parameters() -> None:
    """Cheap Argon2id parameters, for the test suite only (it hashes hundreds of passwords).

    Still Argon2id, so every code path is the production one; only the cost differs.
    """
    global _hasher, _DUMMY_HASH
    _hasher = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    _DUMMY_HASH = None


class PasswordPolicyError(ValueError):
    pass


@lru_cache(maxsize=1)
def _common() -> frozenset[str]:
    return frozenset(p.lower() for p in FREQUENCY_LISTS["passwords"])


def check_policy(
    password: str, *, min_length: int = 12, user_inputs: list[str] | None = None
) -> None:
    if len(password) < min_length:
        raise PasswordPolicyError(f"password must be at least {min_length} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise PasswordPolicyError(f"password must be at most {MAX_PASSWORD_LENGTH} characters")
    if password.lower() in _common():
        raise PasswordPolicyError("password is one of the most common passwords")
    # zxcvbn refuses more than 72 characters; its estimate of the first 72 is a lower bound
    # for the whole, and a long passphrase from a password manager must be accepted.
    result = zxcvbn(password[:ZXCVBN_MAX], user_inputs=[u for u in (user_inputs or []) if u])
    if result["score"] < 2:
        hint = (result["feedback"].get("warning") or "it is too easy to guess").rstrip(".")
        raise PasswordPolicyError(f"password is too weak: {hint}")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return (
            _hasher.verify(password_hash or _dummy_hash(), password) and password_hash is not None
        )
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    return _hasher.check_needs_rehash(password_hash)
