"""Personal API tokens: issued once in clear, stored as a hash, listed, expired and revoked."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, Literal

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.audit.service import record
from app.auth.models import ApiToken, Membership, User
from app.db import utcnow
from app.errors import FieldProblem, StudioError, status_for
from app.security import new_token, token_hash

#: Characters of the token kept in clear so people can tell their tokens apart ("fts_AbC12345").
API_TOKEN_PREFIX = "fts_"  # noqa: S105 - a label on tokens, not a secret
SHOWN_PREFIX_CHARS = len(API_TOKEN_PREFIX) + 8
MAX_NAME_CHARS = 120
#: Live tokens one person may hold in one team; a cap keeps a leaked session from minting many.
MAX_ACTIVE_TOKENS = 25
#: Lifetimes offered at creation, in days; None means "until revoked".
EXPIRY_CHOICES_DAYS: tuple[int | None, ...] = (30, 90, 365, None)
DEFAULT_EXPIRY_DAYS: Final = 90


class TokenError(StudioError, ValueError):
    """A token request that cannot be carried out; `field` names the input at fault.

    Its HTTP status comes from `code` in app.errors (422 "invalid_request", 409 otherwise).
    """

    def __init__(self, message: str, code: str, field: str | None = None) -> None:
        fields = [FieldProblem(field=field, message=message)] if field else []
        super().__init__(status_for(code), code, message, fields)
        self.field = field


@dataclass(frozen=True)
class IssuedToken:
    """A new token: `secret` is the only time the full token exists outside its owner's hands."""

    token: ApiToken
    secret: str


def clean_token_name(name: str) -> str:
    cleaned = " ".join(name.split())
    if not cleaned:
        raise TokenError("Give the token a name, e.g. 'build server'.", "invalid_request", "name")
    if len(cleaned) > MAX_NAME_CHARS:
        raise TokenError(
            f"Use at most {MAX_NAME_CHARS} characters for the name.", "invalid_request", "name"
        )
    if "\x00" in cleaned:
        raise TokenError("The name cannot contain NUL characters.", "invalid_request", "name")
    return cleaned


def parse_expiry(text: str) -> int | None:
    """The form's expiry choice ("30", "90", "365" or "never") as days; TokenError otherwise."""
    value = text.strip().lower()
    if value in ("", "never", "none"):
        return None if value else DEFAULT_EXPIRY_DAYS
    if value.isdigit() and int(value) in EXPIRY_CHOICES_DAYS:
        return int(value)
    raise TokenError(
        "Choose when the token expires: in 30, 90 or 365 days, or never.",
        "invalid_request",
        "expires_in_days",
    )


def token_state(
    token: ApiToken, now: datetime | None = None
) -> Literal["active", "expired", "revoked"]:
    """The token's state: "revoked", "expired" or "active"."""
    if token.revoked_at is not None:
        return "revoked"
    if token.expires_at is not None and token.expires_at <= (now or utcnow()):
        return "expired"
    return "active"


def issue_token(
    db: Session,
    *,
    user_id: uuid.UUID,
    team_id: uuid.UUID,
    name: str,
    expires_in_days: int | None = DEFAULT_EXPIRY_DAYS,
) -> IssuedToken:
    """Create a token acting as `user_id` within `team_id`; the clear text is returned once.

    `expires_in_days` is one of EXPIRY_CHOICES_DAYS (None: until revoked); TokenError otherwise.
    """
    cleaned = clean_token_name(name)
    if expires_in_days not in EXPIRY_CHOICES_DAYS:
        raise TokenError(
            "expires_in_days must be 30, 90, 365 or null (never).",
            "invalid_request",
            "expires_in_days",
        )
    now = utcnow()
    active = db.scalars(
        select(ApiToken.id).where(
            ApiToken.user_id == user_id,
            ApiToken.team_id == team_id,
            ApiToken.revoked_at.is_(None),
            ApiToken.expires_at.is_(None) | (ApiToken.expires_at > now),
        )
    ).all()
    if len(active) >= MAX_ACTIVE_TOKENS:
        raise TokenError(
            f"You already have {MAX_ACTIVE_TOKENS} active tokens in this team; "
            "revoke one you no longer use first.",
            "too_many_tokens",
        )
    secret = API_TOKEN_PREFIX + new_token(32)
    token = ApiToken(
        id=uuid.uuid4(),
        user_id=user_id,
        team_id=team_id,
        name=cleaned,
        prefix=secret[:SHOWN_PREFIX_CHARS],
        token_hash=token_hash(secret),
        expires_at=now + timedelta(days=expires_in_days) if expires_in_days else None,
    )
    db.add(token)
    db.flush()
    return IssuedToken(token=token, secret=secret)


def list_tokens(db: Session, *, user_id: uuid.UUID, team_id: uuid.UUID) -> list[ApiToken]:
    """The person's tokens in this team, newest first, revoked ones included (marked)."""
    return list(
        db.scalars(
            select(ApiToken)
            .where(ApiToken.user_id == user_id, ApiToken.team_id == team_id)
            .order_by(ApiToken.created_at.desc(), ApiToken.id.desc())
        )
    )


def find_token(
    db: Session, *, token_id: uuid.UUID, user_id: uuid.UUID, team_id: uuid.UUID
) -> ApiToken | None:
    """The person's own token in this team; anybody else's is as good as missing."""
    return db.scalars(
        select(ApiToken).where(
            ApiToken.id == token_id, ApiToken.user_id == user_id, ApiToken.team_id == team_id
        )
    ).first()


def revoke_token(
    db: Session, *, token_id: uuid.UUID, user_id: uuid.UUID, team_id: uuid.UUID
) -> ApiToken | None:
    """Revoke the person's token (repeating it is harmless); None when it is not theirs.

    The first revocation is audited as "token.revoked" (by the token's owner).
    """
    token = find_token(db, token_id=token_id, user_id=user_id, team_id=team_id)
    if token is None:
        return None
    if token.revoked_at is None:
        token.revoked_at = utcnow()
        db.flush()
        owner = db.get(User, user_id)
        record(
            db,
            team_id=team_id,
            actor_id=user_id,
            actor_email=owner.email if owner else "",
            action="token.revoked",
            target_type="api_token",
            target_id=token.id,
            before={"name": token.name, "owner": owner.email if owner else None, "revoked": False},
            after={"revoked": True},
        )
    return token


def revoke_tokens_of(db: Session, *, user_id: uuid.UUID, team_id: uuid.UUID | None = None) -> int:
    """Revoke every live token of the person (in one team, or in all); returns how many.

    Revoked rows stay revoked for good: rejoining a team later does not bring them back.
    """
    stmt = update(ApiToken).where(ApiToken.user_id == user_id, ApiToken.revoked_at.is_(None))
    if team_id is not None:
        stmt = stmt.where(ApiToken.team_id == team_id)
    result = db.execute(stmt.values(revoked_at=utcnow()))
    return result.rowcount or 0  # type: ignore[attr-defined]


def revoke_member_tokens(db: Session, *, team_id: uuid.UUID, user_id: uuid.UUID, by: User) -> int:
    """An admin (`by`) revokes every live API token another member holds for this team (a
    lost laptop, a leaked token); audited as "token.revoked_for_member". Returns how many.

    Raises LookupError when the person is not in the team (the caller answers 404).
    """
    member = db.scalar(
        select(User)
        .join(Membership, Membership.user_id == User.id)
        .where(Membership.team_id == team_id, User.id == user_id)
    )
    if member is None:
        raise LookupError("That person was not found in this team.")
    revoked = revoke_tokens_of(db, user_id=user_id, team_id=team_id)
    record(
        db,
        team_id=team_id,
        actor_id=by.id,
        actor_email=by.email,
        action="token.revoked_for_member",
        target_type="user",
        target_id=user_id,
        before={"owner": member.email, "live_tokens": revoked},
        after={"live_tokens": 0},
    )
    return revoked


def live_token_count(db: Session, user_id: uuid.UUID) -> int:
    """How many of the person's tokens, in all their teams, still work."""
    now = utcnow()
    return len(
        db.scalars(
            select(ApiToken.id).where(
                ApiToken.user_id == user_id,
                ApiToken.revoked_at.is_(None),
                ApiToken.expires_at.is_(None) | (ApiToken.expires_at > now),
            )
        ).all()
    )
