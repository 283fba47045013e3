"""Moving jobs to another project of the team, with their charges, reservations and rollup.

A move changes who pays, after the fact: the job's `project_id`, its ledger row's, its
reservation's and its share of the daily rollup (`charge_days`) change together, in one
transaction under the team's budget lock, so every project's figures stay equal to the ledger
and the team's totals do not move. The rights are those of editing the job: its author or a
manager; a manager moving someone else's job is audited as "job.moved".
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.audit.service import record
from app.auth.models import User
from app.costs.service import lock_team_budgets, move_job_costs
from app.errors import FieldError, FieldProblem, NotFound, RequestInvalid
from app.jobs.models import Job
from app.projects.models import Project

#: Why a job of the team is not moved for someone who is neither its author nor a manager.
NOT_YOURS = "only its author or a manager can move it"
#: Why an id is not moved when no such job is in the team.
NOT_IN_TEAM = "not found in this team"


class ProjectNotFound(NotFound):
    """The target project is not one of the team's (404, field `project_id`)."""

    def __init__(self) -> None:
        super().__init__("That project")
        self.fields = [
            FieldProblem(
                field="project_id",
                message="that project was not found in this team; choose one of its projects",
            )
        ]


@dataclass
class MoveOutcome:
    """What a move did: the ids now in the project and each id refused with why."""

    project: Project
    moved: list[uuid.UUID] = field(default_factory=list)
    refused: list[tuple[uuid.UUID, str]] = field(default_factory=list)


def target_project(db: Session, *, team_id: uuid.UUID, project_id: uuid.UUID | None) -> Project:
    """The team's active project jobs may move to.

    Raises RequestInvalid (`project_id`) when none is given or it is archived, and
    ProjectNotFound (404, `project_id`) for an id that is not the team's.
    """
    if project_id is None:
        raise RequestInvalid([FieldError("project_id", "choose the project to move them to")])
    project = db.scalar(select(Project).where(Project.id == project_id, Project.team_id == team_id))
    if project is None:
        raise ProjectNotFound()
    if project.archived:
        raise RequestInvalid(
            [
                FieldError(
                    "project_id", f"project '{project.name}' is archived; choose an active project"
                )
            ]
        )
    return project


def move_jobs(
    db: Session,
    *,
    team_id: uuid.UUID,
    user_id: uuid.UUID,
    is_manager: bool,
    job_ids: list[uuid.UUID],
    project_id: uuid.UUID | None,
) -> MoveOutcome:
    """Move each of the team's jobs `job_ids` to the project `project_id`, with its costs.

    Per job: a missing (or other team's, or deleted) one is refused as not found, someone
    else's is refused unless the caller is a manager; a job already there counts as moved.
    Raises what `target_project` raises before anything changes. Flushes; the caller commits.
    """
    project = target_project(db, team_id=team_id, project_id=project_id)
    outcome = MoveOutcome(project=project)
    lock_team_budgets(db, team_id)
    # Row locks in id order: a worker charging one of these jobs waits, then charges the
    # project the job is in by then (or this move waits for its charge and moves it).
    jobs = db.scalars(
        select(Job)
        .where(Job.id.in_(job_ids), Job.team_id == team_id, Job.deleted_at.is_(None))
        .order_by(Job.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).all()
    found = {job.id: job for job in jobs}
    for job_id in dict.fromkeys(job_ids):
        job = found.get(job_id)
        if job is None:
            outcome.refused.append((job_id, NOT_IN_TEAM))
        elif job.user_id != user_id and not is_manager:
            outcome.refused.append((job_id, NOT_YOURS))
        else:
            _move_one(db, job, project.id, user_id)
            outcome.moved.append(job_id)
    db.flush()
    return outcome


def _move_one(db: Session, job: Job, to_project_id: uuid.UUID, by_user_id: uuid.UUID) -> None:
    from_project_id = job.project_id
    if from_project_id == to_project_id:
        return
    job.project_id = to_project_id
    db.flush()
    credits = move_job_costs(db, team_id=job.team_id, job_id=job.id, to_project_id=to_project_id)
    if job.user_id != by_user_id:
        manager = db.get(User, by_user_id)
        owner = db.get(User, job.user_id)
        record(
            db,
            team_id=job.team_id,
            actor_id=by_user_id,
            actor_email=manager.email if manager else "",
            action="job.moved",
            target_type="job",
            target_id=job.id,
            before={
                "owner": owner.email if owner else None,
                "project_id": str(from_project_id),
                "credits": str(credits),
            },
            after={"project_id": str(to_project_id)},
        )


__all__ = ["NOT_IN_TEAM", "NOT_YOURS", "MoveOutcome", "ProjectNotFound", "move_jobs"]
