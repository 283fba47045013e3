"""JSON API for the caller's identity and personal API tokens (create, list, revoke)."""

from __future__ import annotations

import uuid
from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from app.api.schemas import BFL_BACKEND_HELP, BflBackend, bfl_backend
from app.auth.deps import ChangingActor, CurrentActor
from app.auth.models import ApiToken, Role
from app.auth.tokens import (
    DEFAULT_EXPIRY_DAYS,
    MAX_NAME_CHARS,
    issue_token,
    list_tokens,
    revoke_token,
    token_state,
)
from app.deps import SessionDep
from app.errors import NotFound, StudioError, error_responses
from app.timestamps import UtcDatetime

router = APIRouter(tags=["account"])


class PersonOut(BaseModel):
    id: uuid.UUID
    email: str
    name: str


class TeamOut(BaseModel):
    id: uuid.UUID
    name: str


class MeOut(BaseModel):
    """Who the caller is: a person acting in one team with one role."""

    user: PersonOut
    team: TeamOut
    role: Role
    via: Literal["session", "token"] = Field(description="How this request was authenticated.")
    bfl_backend: BflBackend = Field(description=BFL_BACKEND_HELP)


class TokenOut(BaseModel):
    """A personal API token as listed: never the token itself, only its first characters."""

    id: uuid.UUID
    name: str
    prefix: str = Field(description="The token's first characters, to tell tokens apart.")
    created_at: UtcDatetime
    last_used_at: UtcDatetime | None
    revoked_at: UtcDatetime | None
    expires_at: UtcDatetime | None = Field(description="When it stops working; null: never.")
    state: Literal["active", "expired", "revoked"]

    @classmethod
    def of(cls, token: ApiToken) -> TokenOut:
        return cls(
            id=token.id,
            name=token.name,
            prefix=token.prefix,
            created_at=token.created_at,
            last_used_at=token.last_used_at,
            revoked_at=token.revoked_at,
            expires_at=token.expires_at,
            state=token_state(token),
        )


class TokenCreate(BaseModel):
    name: str = Field(
        min_length=1,
        max_length=MAX_NAME_CHARS,
        pattern=r"^[^\x00]*$",
        description="What the token is for, e.g. 'build server'.",
    )
    expires_in_days: Literal[30, 90, 365] | None = Field(
        default=DEFAULT_EXPIRY_DAYS,
        description="Days until the token stops working (30, 90 or 365); null: until revoked.",
    )


class TokenCreated(BaseModel):
    """A new token. `secret` is shown only in this answer: store it now."""

    token: TokenOut
    secret: str = Field(description="Send as `Authorization: Bearer <secret>`.")


@router.get("/me", response_model=MeOut, summary="The caller")
def me(actor: CurrentActor) -> MeOut:
    return MeOut(
        user=PersonOut(id=actor.user.id, email=actor.user.email, name=actor.user.name),
        team=TeamOut(id=actor.team.id, name=actor.team.name),
        role=actor.role,
        via="token" if actor.token is not None else "session",
        bfl_backend=bfl_backend(),
    )


@router.get("/tokens", response_model=list[TokenOut], summary="My API tokens in this team")
def tokens(actor: CurrentActor, db: SessionDep) -> list[TokenOut]:
    return [TokenOut.of(t) for t in list_tokens(db, user_id=actor.user_id, team_id=actor.team_id)]


@router.post(
    "/tokens",
    status_code=201,
    response_model=TokenCreated,
    summary="Create an API token (from a signed-in session)",
    responses=error_responses(403, 409, 422),
)
def create_token(body: TokenCreate, actor: ChangingActor, db: SessionDep) -> TokenCreated:
    """Tokens are made from a browser session, not with another token, so a leaked token
    cannot mint successors that outlive its revocation."""
    if actor.token is not None:
        raise StudioError(
            403,
            "session_required",
            "API tokens can only be created from a signed-in session (the Account page).",
        )
    issued = issue_token(
        db,
        user_id=actor.user_id,
        team_id=actor.team_id,
        name=body.name,
        expires_in_days=body.expires_in_days,
    )
    return TokenCreated(token=TokenOut.of(issued.token), secret=issued.secret)


@router.delete(
    "/tokens/{token_id}",
    response_model=TokenOut,
    summary="Revoke one of my API tokens",
    responses=error_responses(404, 422),
)
def revoke(token_id: uuid.UUID, actor: ChangingActor, db: SessionDep) -> TokenOut:
    """Revoked at once: the next request with it is a 401. Revoking twice is harmless."""
    token = revoke_token(db, token_id=token_id, user_id=actor.user_id, team_id=actor.team_id)
    if token is None:
        raise NotFound("That API token")
    return TokenOut.of(token)
