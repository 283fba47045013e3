"""The projects page: managers and admins create, rename, archive and restore projects."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm import Session

from app.auth.deps import Actor, ActorView, ChangingActor, ManagerActor
from app.db import session_scope
from app.deps import SessionDep
from app.errors import StudioError, answer_refusals_with
from app.projects import service
from app.projects.models import PROJECT_NAME_MAX_CHARS
from app.templating import templates

router = APIRouter(tags=["projects pages"])


def _changer(actor: Actor) -> service.Changer:
    return service.Changer(team_id=actor.team_id, user_id=actor.user_id, email=actor.user.email)


def _page(
    request: Request,
    db: Session,
    actor: Actor | ActorView,
    *,
    error: str | None = None,
    status: int = 200,
) -> Response:
    context: dict[str, Any] = {
        "actor": actor,
        "projects": service.list_projects(db, team_id=actor.team_id),
        "name_max": PROJECT_NAME_MAX_CHARS,
        "saved": request.query_params.get("saved") == "1",
        "error": error,
    }
    return templates.TemplateResponse(request, "projects/list.html", context, status_code=status)


def _refused(request: Request) -> None:
    """Show a refusal (a taken name, the default project) on the page itself, after the
    request's session was rolled back: read in a session of its own, the caller as a view."""

    def render(exc: StudioError) -> Response | None:
        actor = getattr(request.state, "actor_view", None)
        if actor is None or exc.status_code not in (409, 422):
            return None
        with session_scope() as db:
            return _page(request, db, actor, error=exc.message, status=exc.status_code)

    answer_refusals_with(request, render)


@router.get("/projects", response_class=HTMLResponse, summary="Projects page")
def projects_page(request: Request, actor: ManagerActor, db: SessionDep) -> Response:
    """The team's projects with their forms (managers and admins)."""
    return _page(request, db, actor)


@router.post("/projects", response_class=HTMLResponse, summary="Create a project")
def create(
    request: Request,
    actor: ManagerActor,
    changing: ChangingActor,
    db: SessionDep,
    name: Annotated[str, Form()] = "",
) -> Response:
    """Create a project; a refused name is shown on the page (422)."""
    _refused(request)
    service.create_project(db, _changer(changing), name=name)
    return RedirectResponse("/projects?saved=1", status_code=303)


@router.post("/projects/{project_id}/rename", response_class=HTMLResponse, summary="Rename")
def rename(
    request: Request,
    project_id: uuid.UUID,
    actor: ManagerActor,
    changing: ChangingActor,
    db: SessionDep,
    name: Annotated[str, Form()] = "",
) -> Response:
    """Rename one of the team's projects."""
    _refused(request)
    service.rename_project(db, _changer(changing), project_id=project_id, name=name)
    return RedirectResponse("/projects?saved=1", status_code=303)


@router.post("/projects/{project_id}/archive", response_class=HTMLResponse, summary="Archive")
def archive(
    request: Request,
    project_id: uuid.UUID,
    actor: ManagerActor,
    changing: ChangingActor,
    db: SessionDep,
    archived: Annotated[str, Form()] = "true",
) -> Response:
    """Archive (archived=true) or restore (archived=false) one of the team's projects."""
    _refused(request)
    service.set_archived(
        db, _changer(changing), project_id=project_id, archived=archived.strip() != "false"
    )
    return RedirectResponse("/projects?saved=1", status_code=303)
