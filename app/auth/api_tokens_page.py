"""The API tokens page of an account: create a token (shown once) with an expiry, see its last
use and when it expires, revoke."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from app.auth.deps import Actor, CurrentActor, SessionActor
from app.auth.tokens import (
    DEFAULT_EXPIRY_DAYS,
    EXPIRY_CHOICES_DAYS,
    MAX_NAME_CHARS,
    TokenError,
    issue_token,
    list_tokens,
    parse_expiry,
    revoke_token,
    token_state,
)
from app.deps import SessionDep
from app.errors import NotFound
from app.templating import templates

router = APIRouter(include_in_schema=False)


def _page(
    request: Request,
    db: SessionDep,
    actor: Actor,
    *,
    secret: str | None = None,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    context: dict[str, Any] = {
        "actor": actor,
        "tokens": list_tokens(db, user_id=actor.user_id, team_id=actor.team_id),
        "secret": secret,
        "error": error,
        "revoked": request.query_params.get("done") == "revoked",
        "max_name_chars": MAX_NAME_CHARS,
        "expiry_choices": EXPIRY_CHOICES_DAYS,
        "default_expiry": DEFAULT_EXPIRY_DAYS,
        "token_state": token_state,
    }
    # The page may carry a token in clear: never let a browser or proxy keep a copy.
    return templates.TemplateResponse(
        request,
        "account/tokens.html",
        context,
        status_code=status_code,
        headers={"Cache-Control": "no-store"},
    )


@router.get("/account/tokens", response_class=HTMLResponse)
def tokens_page(request: Request, db: SessionDep, actor: CurrentActor) -> Response:
    return _page(request, db, actor)


@router.post("/account/tokens", response_class=HTMLResponse)
def create_token(
    request: Request,
    db: SessionDep,
    actor: SessionActor,
    name: Annotated[str, Form()] = "",
    expires_in_days: Annotated[str, Form()] = "",
) -> Response:
    if actor.session is None:
        return _page(
            request, db, actor, error="Create tokens from a signed-in browser.", status_code=403
        )
    try:
        issued = issue_token(
            db,
            user_id=actor.user_id,
            team_id=actor.team_id,
            name=name,
            expires_in_days=parse_expiry(expires_in_days),
        )
    except TokenError as exc:
        return _page(request, db, actor, error=exc.message, status_code=400)
    return _page(request, db, actor, secret=issued.secret, status_code=201)


@router.post("/account/tokens/{token_id}/revoke")
def revoke(token_id: uuid.UUID, db: SessionDep, actor: SessionActor) -> Response:
    if revoke_token(db, token_id=token_id, user_id=actor.user_id, team_id=actor.team_id) is None:
        raise NotFound("That API token")
    return RedirectResponse("/account/tokens?done=revoked", status_code=303)
