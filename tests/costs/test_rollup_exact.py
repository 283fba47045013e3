"""The rollups behind the dashboard and the budget checks equal the ledger itself, after random
charges (some on earlier days), state changes, late acceptances and deleted jobs."""

from __future__ import annotations

import random
import uuid
from collections import defaultdict
from datetime import timedelta
from decimal import Decimal

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from app.costs.models import Charge, Reservation, ReservationState
from app.costs.service import (
    Scope,
    budget_lines,
    committed_credits,
    cost_summary,
    month_start,
    rebuild_rollup,
    record_charge,
    set_budget,
    this_month,
)
from app.db import utcnow
from app.jobs import state
from app.jobs.models import Job, JobStatus
from app.jobs.service import delete_job
from app.projects.models import Project
from tests.costs.factories import make_job
from tests.factories import Person, make_person

MODELS = ("flux-2-pro", "flux-2-flex", "flux-2-max")
PROMPTS = ("a red kite", "a blue boat", "a green field", "an old mill")


def _charged_jobs(db: Session, people: list[Person], rng: random.Random, n: int) -> list[Job]:
    """`n` jobs accepted by BFL (pending, charged through the studio's own code)."""
    projects: list[uuid.UUID | None] = [None]
    for _ in range(2):
        project = Project(team_id=people[0].team.id, name=f"Client {rng.random()}")
        db.add(project)
        db.flush()
        projects.append(project.id)
    jobs = []
    for _ in range(n):
        job = make_job(
            db,
            rng.choice(people),
            model=rng.choice(MODELS),
            prompt=rng.choice(PROMPTS),
            status=JobStatus.PENDING,
            cost=str(rng.randint(1, 40) / 4),
            bfl_task_id=f"task-{rng.random()}",
            project_id=rng.choice(projects),
        )
        record_charge(db, job)
        jobs.append(job)
    return jobs


def _backdate(db: Session, jobs: list[Job], rng: random.Random) -> None:
    """Move some charges to earlier days of this month, as a long month would have them."""
    days_so_far = (utcnow() - month_start()).days
    for job in jobs:
        if days_so_far and rng.random() < 0.6:
            at = month_start() + timedelta(days=rng.randint(0, days_so_far - 1), hours=3)
            db.execute(update(Charge).where(Charge.job_id == job.id).values(created_at=at))
    rebuild_rollup(db, team_id=jobs[0].team_id)


def _finish_some(db: Session, jobs: list[Job], people: list[Person], rng: random.Random) -> None:
    for job in jobs:
        roll = rng.random()
        if roll < 0.4:
            assert state.mark_ready(db, job.id, result_seed=1, bfl_ready_at=utcnow())
        elif roll < 0.55:
            assert state.finish_unsuccessfully(
                db,
                job.id,
                expected=JobStatus.PENDING,
                target=JobStatus.MODERATED,
                error_code="moderated",
                error_message="moderated",
            )
        elif roll < 0.7:
            assert state.finish_unsuccessfully(
                db,
                job.id,
                expected=JobStatus.PENDING,
                target=JobStatus.FAILED,
                error_code="bfl_error",
                error_message="failed",
            )
        if rng.random() < 0.3:
            delete_job(
                db, team_id=job.team_id, job_id=job.id, user_id=people[0].user.id, is_manager=True
            )


def _late_acceptances(db: Session, person: Person) -> None:
    """A job the sweeper gave up on, then BFL's answer came: charged while failed."""
    job = make_job(db, person, status=JobStatus.FAILED, error_code="submission_unknown")
    assert state.note_late_acceptance(db, job.id, bfl_task_id="late-1", cost_credits=Decimal(5))


def _ledger_by(db: Session, team: Scope, key: str) -> dict[str, tuple[Decimal, int]]:
    """Credits and charges of this month straight from the ledger, per job status or model."""
    column = Job.status if key == "status" else Charge.model
    rows = db.execute(
        select(column, func.sum(Charge.credits), func.count())
        .join(Job, Job.id == Charge.job_id)
        .where(Charge.team_id == team.team_id, Charge.created_at >= month_start())
        .group_by(column)
    ).all()
    return {str(k): (Decimal(c), int(n)) for k, c, n in rows}


def _ledger_prompts(db: Session, team: Scope) -> dict[str, tuple[Decimal, int]]:
    rows = db.execute(
        select(Job.prompt, func.sum(Charge.credits), func.count())
        .join(Job, Job.id == Charge.job_id)
        .where(Charge.team_id == team.team_id, Charge.created_at >= month_start())
        .group_by(Job.prompt)
    ).all()
    return {p: (Decimal(c), int(n)) for p, c, n in rows}


def _ledger_used(db: Session, person: Person, by_user: bool) -> Decimal:
    charged = select(func.coalesce(func.sum(Charge.credits), 0)).where(
        Charge.team_id == person.team.id, Charge.created_at >= month_start()
    )
    held = select(func.coalesce(func.sum(Reservation.credits), 0)).where(
        Reservation.team_id == person.team.id,
        Reservation.state == ReservationState.HELD.value,
    )
    if by_user:
        charged = charged.where(Charge.user_id == person.user.id)
        held = held.where(Reservation.user_id == person.user.id)
    return Decimal(db.scalar(charged) or 0) + Decimal(db.scalar(held) or 0)


def test_rollup_figures_equal_the_ledger(db: Session) -> None:
    rng = random.Random(20261130)
    first = make_person(db)
    people = [first, make_person(db, team=first.team), make_person(db, team=first.team)]
    make_person(db)  # another team's spend must not show
    jobs = _charged_jobs(db, people, rng, 60)
    _backdate(db, jobs, rng)
    _finish_some(db, jobs, people, rng)
    jobs += _charged_jobs(db, people, rng, 15)  # today, after the rollup was rebuilt
    _finish_some(db, jobs[-15:], people, rng)
    _late_acceptances(db, first)
    db.flush()

    team = Scope(first.team.id)
    summary = cost_summary(db, team, this_month())
    outcomes = {o.status: (o.credits, o.charges) for o in summary.by_outcome}
    assert outcomes == _ledger_by(db, team, "status")
    models = {m.model: (m.credits, m.charges) for m in summary.by_model}
    assert models == _ledger_by(db, team, "model")
    ready: defaultdict[str, int] = defaultdict(int)
    for job in db.scalars(select(Job).join(Charge, Charge.job_id == Job.id)):
        if job.team_id == first.team.id and job.status == JobStatus.READY:
            ready[job.model] += 1
    assert {m.model: m.ready_images for m in summary.by_model if m.ready_images} == ready
    prompts = _ledger_prompts(db, team)
    top = sorted(prompts.items(), key=lambda item: -item[1][0])
    assert [(p.prompt, p.credits, p.charges) for p in summary.top_prompts] == [
        (prompt, credits, count) for prompt, (credits, count) in top
    ]
    assert (summary.total.credits, summary.total.charges) == (
        sum((c for c, _ in prompts.values()), Decimal(0)),
        sum(n for _, n in prompts.values()),
    )

    for by_user in (True, False):
        used = committed_credits(
            db,
            team_id=first.team.id,
            user_id=first.user.id if by_user else None,
            since=month_start(),
        )
        assert used == _ledger_used(db, first, by_user)
    set_budget(db, team_id=first.team.id, user_id=None, monthly_credits=Decimal(10_000))
    (line,) = budget_lines(db, first.team.id)
    assert line.spent + line.held == _ledger_used(db, first, by_user=False)
