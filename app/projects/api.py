"""Projects as JSON under /api/v1: everyone lists them; managers create, rename and archive."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query

from app.auth.deps import Actor, ChangingActor, CurrentActor, ManagerActor
from app.deps import SessionDep
from app.errors import error_responses
from app.projects import service
from app.projects.schemas import ProjectChange, ProjectCreate, ProjectOut

router = APIRouter(tags=["projects"])


def changer(actor: Actor) -> service.Changer:
    """The audit log's view of the caller."""
    return service.Changer(team_id=actor.team_id, user_id=actor.user_id, email=actor.user.email)


@router.get("/projects", response_model=list[ProjectOut], responses=error_responses(422))
def list_projects(
    actor: CurrentActor,
    db: SessionDep,
    archived: Annotated[bool, Query(description="Include archived projects.")] = True,
) -> list[ProjectOut]:
    """The team's projects: the default first, then by name, archived ones last."""
    projects = service.list_projects(db, team_id=actor.team_id, include_archived=archived)
    return [ProjectOut.of(p) for p in projects]


@router.post(
    "/projects",
    status_code=201,
    response_model=ProjectOut,
    responses=error_responses(403, 422),
)
def create_project(
    body: ProjectCreate, actor: ManagerActor, changing: ChangingActor, db: SessionDep
) -> ProjectOut:
    """Create a project (managers and admins); audited."""
    return ProjectOut.of(service.create_project(db, changer(changing), name=body.name))


@router.patch(
    "/projects/{project_id}",
    response_model=ProjectOut,
    responses=error_responses(403, 404, 409, 422),
)
def change_project(
    project_id: uuid.UUID,
    body: ProjectChange,
    actor: ManagerActor,
    changing: ChangingActor,
    db: SessionDep,
) -> ProjectOut:
    """Rename, archive or restore one of the team's projects (managers and admins); audited.
    The default project cannot be archived (409)."""
    who = changer(changing)
    project = service.get_project(db, team_id=actor.team_id, project_id=project_id)
    if body.name is not None:
        project = service.rename_project(db, who, project_id=project_id, name=body.name)
    if body.archived is not None:
        project = service.set_archived(db, who, project_id=project_id, archived=body.archived)
    return ProjectOut.of(project)
