"""The notices page (/notices), the bell's unread count in the nav, and marking notices read."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from app.alerts.notices import list_notices, mark_all_read, mark_read, unread_count
from app.auth.deps import ChangingActor, CurrentActor
from app.deps import SessionDep
from app.errors import NotFound
from app.templating import templates

router = APIRouter(tags=["alerts pages"])


@router.get("/notices", response_class=HTMLResponse)
def notices_page(request: Request, actor: CurrentActor, db: SessionDep) -> Response:
    """The caller's notices in this team, newest first."""
    notices = list_notices(db, team_id=actor.team_id, user_id=actor.user_id)
    return templates.TemplateResponse(
        request, "alerts/notices.html", {"actor": actor, "notices": notices}
    )


@router.get("/notices/badge", response_class=HTMLResponse)
def notices_badge(request: Request, actor: CurrentActor, db: SessionDep) -> Response:
    """The bell's count of unread notices (an htmx fragment the nav loads)."""
    count = unread_count(db, team_id=actor.team_id, user_id=actor.user_id)
    return templates.TemplateResponse(request, "alerts/_badge.html", {"count": count})


@router.post("/notices/{notice_id}/read")
def notice_read(notice_id: str, actor: ChangingActor, db: SessionDep) -> Response:
    """Mark one notice read and go back to the list."""
    try:
        wanted = uuid.UUID(notice_id)
    except ValueError:
        raise NotFound("That notice") from None
    mark_read(db, team_id=actor.team_id, user_id=actor.user_id, notice_id=wanted)
    return RedirectResponse("/notices", status_code=303)


@router.post("/notices/read-all")
def notices_read_all(actor: ChangingActor, db: SessionDep) -> Response:
    """Mark every notice read and go back to the list."""
    mark_all_read(db, team_id=actor.team_id, user_id=actor.user_id)
    return RedirectResponse("/notices", status_code=303)
