"""Password hashing (argon2id) and strength rules (zxcvbn), random tokens and token hashing."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Sequence

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from app.settings import get_settings

# OWASP ASVS floor is m=19 MiB, t=2, p=1; we sit above it.
_hasher = PasswordHasher(time_cost=2, memory_cost=32 * 1024, parallelism=1)

MIN_PASSWORD_LENGTH = 12
#: zxcvbn's score (0-4) a new password must reach: 3 is "safely unguessable" against an
#: online attack and well above what a throttled sign-in lets anyone try.
MIN_PASSWORD_SCORE = 3
#: Words about this product that make a password easy to guess here whoever chooses it.
_PRODUCT_WORDS = ("flux", "studio", "fluxstudio", "flux team studio", "bfl", "black forest labs")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def password_needs_rehash(password_hash: str) -> bool:
    return _hasher.check_needs_rehash(password_hash)


def password_inputs(email: str, *names: str | None) -> list[str]:
    """The words a password must not be built from: the email, its local part and its pieces,
    the person's name and team names, and this product's name."""
    words: list[str] = []
    email = email.strip().lower()
    if email:
        local = email.split("@", 1)[0]
        words += [email, local, re.sub(r"[._+-]+", "", local), *re.split(r"[._+-]+", local)]
    for name in names:
        if name and name.strip():
            name = name.strip().lower()
            words += [name, re.sub(r"\W+", "", name), *re.split(r"\W+", name)]
    words += _PRODUCT_WORDS
    return [w for w in dict.fromkeys(words) if len(w) >= 3]


def password_problem(password: str, user_inputs: Sequence[str] = ()) -> str | None:
    """Why a new password is not acceptable, in words a person can act on; None if it is.

    Length 12 to 1024 characters, and a zxcvbn score of at least 3 with `user_inputs` (see
    `password_inputs`) counted as known words, so common passwords, keyboard runs, repeats and
    passwords made of the account's own email or names are refused with zxcvbn's reason.
    """
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"use at least {MIN_PASSWORD_LENGTH} characters"
    if len(password) > 1024:
        return "use at most 1024 characters"
    # Imported here: its word lists take ~12 MB, which a web process that never checks a new
    # password (most of them, most of the time) need not hold.
    from zxcvbn import zxcvbn

    result = zxcvbn(password, user_inputs=list(user_inputs))
    if result["score"] >= MIN_PASSWORD_SCORE:
        return None
    feedback = result.get("feedback") or {}
    reasons = [str(feedback.get("warning") or "").rstrip(".")]
    if not reasons[0]:
        from_inputs = any(
            m.get("dictionary_name") == "user_inputs" for m in result.get("sequence", [])
        )
        reasons[0] = (
            "It is built from your email, your name or the team's name"
            if from_inputs
            else "It is easy to guess"
        )
    reasons += [str(s).rstrip(".") for s in feedback.get("suggestions") or []]
    return "this password is too easy to guess. " + ". ".join(r for r in reasons if r) + "."


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
    key = get_settings().SECRET_KEY.get_secret_value().encode()
    return hmac.new(key, f"{purpose}\x00{value}".encode(), hashlib.sha256).hexdigest()
