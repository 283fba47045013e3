"""Rows for cost tests: jobs at any stage, charges at any time, budgets, signed-in callers."""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import update
from sqlalchemy.orm import Session

from app.auth.service import start_session
from app.costs.models import Charge
from app.costs.service import rebuild_rollup, record_charge, set_budget
from app.jobs.models import Job, JobStatus
from tests.factories import Person

_counter = itertools.count(1)


def make_job(
    db: Session,
    person: Person,
    *,
    model: str = "flux-2-pro",
    prompt: str | None = None,
    estimated: Decimal | str = "3",
    status: JobStatus = JobStatus.QUEUED,
    cost: Decimal | str | None = None,
    bfl_task_id: str | None = None,
    error_code: str | None = None,
    project_id: uuid.UUID | None = None,
) -> Job:
    job = Job(
        id=uuid.uuid4(),
        team_id=person.team.id,
        user_id=person.user.id,
        **({"project_id": project_id} if project_id is not None else {}),
        status=status.value,
        model=model,
        prompt=prompt or f"a lighthouse at dusk, take {next(_counter)}",
        params={},
        width=1024,
        height=1024,
        estimated_credits=Decimal(estimated),
        cost_credits=Decimal(cost) if cost is not None else None,
        bfl_task_id=bfl_task_id,
        error_code=error_code,
    )
    db.add(job)
    db.flush()
    return job


def make_charge(
    db: Session,
    person: Person,
    credits: Decimal | str,
    *,
    at: datetime | None = None,
    model: str = "flux-2-pro",
    prompt: str | None = None,
    status: JobStatus = JobStatus.READY,
    project_id: uuid.UUID | None = None,
) -> Job:
    """A job BFL charged `credits` for, with its ledger row written by the studio's own code
    (in `project_id`, else the team's default project)."""
    job = make_job(
        db,
        person,
        project_id=project_id,
        model=model,
        prompt=prompt,
        estimated=credits,
        status=status,
        cost=credits,
        bfl_task_id=f"bfl-{uuid.uuid4().hex[:12]}",
    )
    assert record_charge(db, job)
    if at is not None:
        db.execute(update(Charge).where(Charge.job_id == job.id).values(created_at=at))
        db.execute(update(Job).where(Job.id == job.id).values(created_at=at))
        rebuild_rollup(db, team_id=person.team.id)
    db.flush()
    return job


def make_budget(
    db: Session, person_or_team: Person, credits: Decimal | str | None, *, personal: bool
) -> None:
    set_budget(
        db,
        team_id=person_or_team.team.id,
        user_id=person_or_team.user.id if personal else None,
        monthly_credits=Decimal(credits) if credits is not None else None,
    )


@dataclass
class Caller:
    """Headers that make a TestClient request as a signed-in browser session."""

    cookie: str
    csrf: str

    @property
    def headers(self) -> dict[str, str]:
        return {"cookie": self.cookie}


def signed_in(db: Session, person: Person) -> Caller:
    from app.auth.deps import session_cookie_name

    raw, session = start_session(db, person.user, team_id=person.team.id)
    db.commit()
    return Caller(cookie=f"{session_cookie_name()}={raw}", csrf=session.csrf_token)
