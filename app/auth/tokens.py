"""Personal API tokens: issued once in clear, stored as a hash, listed, and revoked."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.auth.deps import API_TOKEN_PREFIX
from app.auth.models import ApiToken
from app.db import utcnow
from app.security import new_token, token_hash

#: Characters of the token kept in clear so people can tell their tokens apart ("fts_AbC12345").
SHOWN_PREFIX_CHARS = len(API_TOKEN_PREFIX) + 8
MAX_NAME_CHARS = 120
#: Live tokens one person may hold in one team; a cap keeps a leaked session from minting many.
MAX_ACTIVE_TOKENS = 25


class TokenError(ValueError):
    """A token request that cannot be carried out; `field` names the input at fault."""

    def __init__(self, message: str, code: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
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


def issue_token(db: Session, *, user_id: uuid.UUID, team_id: uuid.UUID, name: str) -> IssuedToken:
    """Create a token acting as `user_id` within `team_id`; the clear text is returned once."""
    cleaned = clean_token_name(name)
    active = db.scalars(
        select(ApiToken.id).where(
            ApiToken.user_id == user_id,
            ApiToken.team_id == team_id,
            ApiToken.revoked_at.is_(None),
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
    """Revoke the person's token (repeating it is harmless); None when it is not theirs."""
    token = find_token(db, token_id=token_id, user_id=user_id, team_id=team_id)
    if token is None:
        return None
    if token.revoked_at is None:
        token.revoked_at = utcnow()
        db.flush()
    return token
