"""Password hashing (argon2id), random tokens and token hashing for sessions and API tokens."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

# OWASP ASVS floor is m=19 MiB, t=2, p=1; we sit above it.
_hasher = PasswordHasher(time_cost=2, memory_cost=32 * 1024, parallelism=1)

MIN_PASSWORD_LENGTH = 10


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def password_needs_rehash(password_hash: str) -> bool:
    return _hasher.check_needs_rehash(password_hash)


def password_problem(password: str) -> str | None:
    """Why a new password is not acceptable, in words a person can act on; None if it is."""
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"use at least {MIN_PASSWORD_LENGTH} characters"
    if len(password) > 1024:
        return "use at most 1024 characters"
    return None


def new_token(nbytes: int = 32) -> str:
    """A URL-safe random token from the operating system's CSPRNG."""
    return secrets.token_urlsafe(nbytes)


def token_hash(token: str) -> str:
    """Stored form of a bearer token: a plain SHA-256 suffices for 256-bit random tokens."""
    return hashlib.sha256(token.encode()).hexdigest()


def constant_time_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def signature(purpose: str, value: str) -> str:
    """HMAC-SHA256 of `value` under SECRET_KEY, bound to `purpose` so one signature never
    stands in for another kind (a login-form token is no webhook token)."""
    from app.settings import get_settings

    key = get_settings().SECRET_KEY.get_secret_value().encode()
    return hmac.new(key, f"{purpose}\x00{value}".encode(), hashlib.sha256).hexdigest()
