"""Projects: creating, renaming and archiving them, and choosing the one a new job is paid from.

Every lookup carries the caller's team, so another team's project is as good as missing. The
manager actions write their audit entry in the same transaction as the change.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from app.audit.service import record
from app.auth.models import Membership
from app.errors import FieldError, NotFound, RequestInvalid, StudioError
from app.projects.models import DEFAULT_PROJECT_NAME, PROJECT_NAME_MAX_CHARS, Project


@dataclass(frozen=True)
class Changer:
    """Who makes a manager change, as the audit log names them."""

    team_id: uuid.UUID
    user_id: uuid.UUID
    email: str


def create_default_project(db: Session, *, team_id: uuid.UUID) -> Project:
    """The project a new team starts with (`DEFAULT_PROJECT_NAME`); flushed."""
    project = Project(team_id=team_id, name=DEFAULT_PROJECT_NAME, is_default=True)
    db.add(project)
    db.flush()
    return project


def list_projects(
    db: Session, *, team_id: uuid.UUID, include_archived: bool = True
) -> list[Project]:
    """The team's projects: the default first, then by name (archived ones last)."""
    stmt = select(Project).where(Project.team_id == team_id)
    if not include_archived:
        stmt = stmt.where(Project.archived.is_(False))
    stmt = stmt.order_by(Project.archived, Project.is_default.desc(), func.lower(Project.name))
    return list(db.scalars(stmt))


def get_project(db: Session, *, team_id: uuid.UUID, project_id: uuid.UUID) -> Project:
    """The team's project with this id. Raises NotFound (404) for any other id."""
    project = db.scalar(select(Project).where(Project.id == project_id, Project.team_id == team_id))
    if project is None:
        raise NotFound("That project")
    return project


def default_project(db: Session, *, team_id: uuid.UUID) -> Project:
    """The team's default project (made now if the team has none yet)."""
    project = db.scalar(select(Project).where(Project.team_id == team_id, Project.is_default))
    return project if project is not None else create_default_project(db, team_id=team_id)


def last_used_project(db: Session, *, team_id: uuid.UUID, user_id: uuid.UUID) -> Project:
    """The project this person last queued jobs in, if still active; else the team's default."""
    project = db.scalar(
        select(Project)
        .join(Membership, Membership.last_project_id == Project.id)
        .where(
            Membership.team_id == team_id,
            Membership.user_id == user_id,
            Project.team_id == team_id,
            Project.archived.is_(False),
        )
    )
    return project if project is not None else default_project(db, team_id=team_id)


def project_for_new_jobs(
    db: Session,
    *,
    team_id: uuid.UUID,
    user_id: uuid.UUID,
    project_id: uuid.UUID | None,
) -> Project:
    """The project new jobs go to, remembered as this person's last used one in the team.

    `project_id` None means the person's last used project (else the team's default). Raises
    NotFound (404) for a project outside the team and RequestInvalid (422, field `project_id`)
    for an archived one.
    """
    if project_id is None:
        project = last_used_project(db, team_id=team_id, user_id=user_id)
    else:
        project = get_project(db, team_id=team_id, project_id=project_id)
        if project.archived:
            raise RequestInvalid(
                [
                    FieldError(
                        "project_id",
                        f"project '{project.name}' is archived; choose an active project",
                    )
                ]
            )
    db.execute(
        update(Membership)
        .where(
            Membership.team_id == team_id,
            Membership.user_id == user_id,
            Membership.last_project_id.is_distinct_from(project.id),
        )
        .values(last_project_id=project.id)
    )
    return project


def _clean_name(db: Session, team_id: uuid.UUID, name: str, *, keep: uuid.UUID | None) -> str:
    cleaned = " ".join(str(name).split())
    if not cleaned:
        raise RequestInvalid([FieldError("name", "name is required; give the project a name")])
    if len(cleaned) > PROJECT_NAME_MAX_CHARS:
        raise RequestInvalid(
            [FieldError("name", f"name: use at most {PROJECT_NAME_MAX_CHARS} characters")]
        )
    taken = db.scalar(
        select(Project.id).where(
            Project.team_id == team_id, func.lower(Project.name) == cleaned.lower()
        )
    )
    if taken is not None and taken != keep:
        raise RequestInvalid(
            [FieldError("name", f"the team already has a project named '{cleaned}'; pick another")]
        )
    return cleaned


def create_project(db: Session, changer: Changer, *, name: str) -> Project:
    """A new active project in the changer's team, audited. Raises RequestInvalid (`name`)."""
    cleaned = _clean_name(db, changer.team_id, name, keep=None)
    project = Project(team_id=changer.team_id, name=cleaned)
    db.add(project)
    db.flush()
    _audit(db, changer, "project.create", project, before=None, after={"name": cleaned})
    return project


def rename_project(db: Session, changer: Changer, *, project_id: uuid.UUID, name: str) -> Project:
    """Rename one of the team's projects, audited. Raises NotFound, RequestInvalid (`name`)."""
    project = get_project(db, team_id=changer.team_id, project_id=project_id)
    cleaned = _clean_name(db, changer.team_id, name, keep=project.id)
    if cleaned != project.name:
        before = {"name": project.name}
        project.name = cleaned
        db.flush()
        _audit(db, changer, "project.rename", project, before=before, after={"name": cleaned})
    return project


def set_archived(
    db: Session, changer: Changer, *, project_id: uuid.UUID, archived: bool
) -> Project:
    """Archive (no new jobs) or restore one of the team's projects, audited.

    Raises NotFound, and StudioError 409 `default_project` for archiving the default project.
    """
    project = get_project(db, team_id=changer.team_id, project_id=project_id)
    if archived and project.is_default:
        raise StudioError(
            409,
            "default_project",
            f"'{project.name}' is the team's default project and cannot be archived.",
        )
    if project.archived != archived:
        project.archived = archived
        db.flush()
        _audit(
            db,
            changer,
            "project.archive" if archived else "project.restore",
            project,
            before={"archived": not archived},
            after={"archived": archived},
        )
    return project


def _audit(
    db: Session,
    changer: Changer,
    action: str,
    project: Project,
    *,
    before: Mapping[str, object] | None,
    after: Mapping[str, object] | None,
) -> None:
    record(
        db,
        team_id=changer.team_id,
        actor_id=changer.user_id,
        actor_email=changer.email,
        action=action,
        target_type="project",
        target_id=project.id,
        before=before,
        after=after,
    )
