"""The ledger and reservations through the real submission path and job state machine."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.auth.models import Role
from app.costs.models import Charge, Reservation, ReservationState
from app.costs.service import (
    BudgetExceeded,
    Scope,
    committed_credits,
    month_start,
    on_job_terminal,
    record_charge,
    spend_total,
    this_month,
)
from app.db import utcnow
from app.jobs import state
from app.jobs.models import Job, JobStatus
from app.jobs.service import create_jobs
from app.settings import get_settings
from tests.costs.factories import make_budget, make_job
from tests.factories import Person, make_person


def submit(db: Session, person: Person, count: int = 1, prompt: str = "a red kite") -> list[Job]:
    return create_jobs(
        db,
        user_id=person.user.id,
        team_id=person.team.id,
        model="flux-2-pro",
        params={"prompt": prompt, "width": 1024, "height": 1024},
        count=count,
    )


def reservation(db: Session, job: Job) -> Reservation:
    found = db.get(Reservation, job.id, populate_existing=True)
    assert found is not None
    return found


def accept(db: Session, job: Job, cost: str | None) -> Job:
    """What the worker does when BFL accepts the POST: claim, then pending with BFL's cost."""
    assert state.claim(db, job.id) is not None
    pending = state.mark_pending(
        db,
        job.id,
        bfl_task_id=f"task-{job.id.hex[:8]}",
        polling_url="https://api.bfl.ai/v1/get_result",
        cost_credits=Decimal(cost) if cost is not None else None,  # type: ignore[arg-type]
        next_poll_at=utcnow(),
    )
    assert pending is not None
    return pending


def test_submission_holds_the_estimate(db: Session) -> None:
    person = make_person(db)
    jobs = submit(db, person, count=3)
    for job in jobs:
        held = reservation(db, job)
        assert held.state == ReservationState.HELD.value
        assert held.credits == job.estimated_credits > 0
    since = month_start()
    expected = sum(j.estimated_credits for j in jobs)
    assert (
        committed_credits(db, team_id=person.team.id, user_id=person.user.id, since=since)
        == expected
    )
    assert committed_credits(db, team_id=person.team.id, user_id=None, since=since) == expected


def test_charged_job_settles_to_the_reported_cost(db: Session) -> None:
    person = make_person(db)
    (job,) = submit(db, person)
    accept(db, job, "4.5")
    assert reservation(db, job).state == ReservationState.SETTLED.value
    charge = db.scalars(select(Charge).where(Charge.job_id == job.id)).one()
    assert charge.credits == Decimal("4.5")
    assert charge.usd == Decimal("4.5") * get_settings().CREDIT_PRICE_USD
    assert (charge.team_id, charge.user_id, charge.model) == (
        person.team.id,
        person.user.id,
        "flux-2-pro",
    )
    # The budget now counts the real cost, not the estimate as well.
    assert committed_credits(
        db, team_id=person.team.id, user_id=person.user.id, since=month_start()
    ) == Decimal("4.5")
    ready = state.mark_ready(db, job.id, result_seed=7, bfl_ready_at=utcnow())
    assert ready is not None
    assert reservation(db, job).state == ReservationState.SETTLED.value
    assert db.scalar(select(func.count()).select_from(Charge)) == 1


def test_moderated_after_acceptance_stays_charged(db: Session) -> None:
    person = make_person(db)
    (job,) = submit(db, person)
    accept(db, job, "3")
    done = state.finish_unsuccessfully(
        db,
        job.id,
        expected=JobStatus.PENDING,
        target=JobStatus.MODERATED,
        error_code="content_moderated",
        error_message="withheld",
    )
    assert done is not None
    assert reservation(db, job).state == ReservationState.SETTLED.value
    assert db.scalar(select(Charge.credits).where(Charge.job_id == job.id)) == Decimal("3")


def test_cancelled_job_releases_its_reservation(db: Session) -> None:
    person = make_person(db)
    (job,) = submit(db, person)
    assert state.cancel(db, job.id) is not None
    held = reservation(db, job)
    assert held.state == ReservationState.RELEASED.value
    assert held.resolved_at is not None
    assert (
        committed_credits(db, team_id=person.team.id, user_id=person.user.id, since=month_start())
        == 0
    )
    assert db.scalar(select(func.count()).select_from(Charge)) == 0


def test_failed_before_bfl_releases_its_reservation(db: Session) -> None:
    person = make_person(db)
    (job,) = submit(db, person)
    assert state.claim(db, job.id) is not None
    failed = state.finish_unsuccessfully(
        db,
        job.id,
        expected=JobStatus.SUBMITTING,
        target=JobStatus.FAILED,
        error_code="bfl_rejected",
        error_message="BFL refused the request (HTTP 422)",
    )
    assert failed is not None
    assert reservation(db, job).state == ReservationState.RELEASED.value
    assert committed_credits(db, team_id=person.team.id, user_id=None, since=month_start()) == 0


def test_submission_unknown_stays_held(db: Session) -> None:
    person = make_person(db)
    (job,) = submit(db, person)
    assert state.claim(db, job.id) is not None
    failed = state.finish_unsuccessfully(
        db,
        job.id,
        expected=JobStatus.SUBMITTING,
        target=JobStatus.FAILED,
        error_code="submission_unknown",
        error_message="BFL may have accepted this job",
    )
    assert failed is not None
    held = reservation(db, job)
    assert held.state == ReservationState.HELD.value
    assert committed_credits(
        db, team_id=person.team.id, user_id=person.user.id, since=month_start()
    ) == (job.estimated_credits)


def test_accepted_job_without_a_recorded_charge_is_charged_at_the_end(db: Session) -> None:
    person = make_person(db)
    job = make_job(db, person, status=JobStatus.FAILED, bfl_task_id="task-1", cost="2.5")
    on_job_terminal(db, job, JobStatus.PENDING.value)
    assert db.scalar(select(Charge.credits).where(Charge.job_id == job.id)) == Decimal("2.5")


def test_charge_is_written_once_per_job(db: Session) -> None:
    person = make_person(db)
    job = make_job(db, person, status=JobStatus.PENDING, bfl_task_id="task-2", cost="3")
    assert record_charge(db, job) is True
    assert record_charge(db, job) is False
    on_job_terminal(db, job, JobStatus.PENDING.value)
    assert db.scalar(select(func.count()).select_from(Charge)) == 1


def test_missing_reported_cost_uses_the_estimate_on_job_and_ledger(db: Session) -> None:
    person = make_person(db)
    (job,) = submit(db, person)
    pending = accept(db, job, None)
    db.expire_all()
    stored = db.get(Job, pending.id)
    assert stored is not None
    assert stored.cost_credits == job.estimated_credits
    assert db.scalar(select(Charge.credits).where(Charge.job_id == job.id)) == (
        job.estimated_credits
    )


def test_ledger_total_equals_the_jobs_costs(db: Session) -> None:
    """Mixed outcomes through the state machine: the ledger sums to SUM(jobs.cost_credits)."""
    team_person = make_person(db, role=Role.MANAGER)
    other = make_person(db, team=team_person.team)
    costs = ["3", "4.25", None, "0", "12.5", "3"]
    for index, cost in enumerate(costs):
        who = team_person if index % 2 else other
        (job,) = submit(db, who, prompt=f"prompt {index}")
        accept(db, job, cost)
        if index % 3 == 0:
            state.finish_unsuccessfully(
                db,
                job.id,
                expected=JobStatus.PENDING,
                target=JobStatus.FAILED,
                error_code="bfl_error",
                error_message="generation failed",
            )
        else:
            state.mark_ready(db, job.id, result_seed=1, bfl_ready_at=utcnow())
    # Jobs that never reached BFL cost nothing and write nothing.
    (cancelled,) = submit(db, other, prompt="never sent")
    state.cancel(db, cancelled.id)
    # The same accepted job reported twice (a redelivered message) is still one row.
    first = db.scalars(select(Job).where(Job.bfl_task_id.is_not(None))).first()
    assert first is not None
    record_charge(db, first)

    team = team_person.team.id
    jobs_sum = db.scalar(
        select(func.coalesce(func.sum(Job.cost_credits), 0)).where(Job.team_id == team)
    )
    ledger_sum = db.scalar(
        select(func.coalesce(func.sum(Charge.credits), 0)).where(Charge.team_id == team)
    )
    assert ledger_sum == jobs_sum
    assert db.scalar(select(func.count()).select_from(Charge)) == len(costs)
    report = spend_total(db, Scope(team), this_month())
    assert report.credits == ledger_sum
    assert report.charges == len(costs)
    # Every reservation is resolved: settled for the charged jobs, released for the cancel.
    states = dict(
        db.execute(select(Reservation.state, func.count()).group_by(Reservation.state)).all()
    )
    assert states == {"settled": len(costs), "released": 1}


def test_budget_refuses_a_submission_that_would_cross_it(db: Session) -> None:
    person = make_person(db)
    (probe,) = submit(db, person)
    price = probe.estimated_credits
    state.cancel(db, probe.id)
    make_budget(db, person, price * 2, personal=True)
    submit(db, person, count=2)
    with pytest.raises(BudgetExceeded) as refused:
        submit(db, person, count=1)
    assert refused.value.scope == "person"
    assert refused.value.remaining == 0
    assert refused.value.message.startswith("Your budget has 0.00 of ")


def test_team_budget_counts_everyone(db: Session) -> None:
    first = make_person(db)
    second = make_person(db, team=first.team)
    (probe,) = submit(db, first)
    price = probe.estimated_credits
    state.cancel(db, probe.id)
    make_budget(db, first, price * 3, personal=False)
    submit(db, first, count=2)
    with pytest.raises(BudgetExceeded) as refused:
        submit(db, second, count=2)
    assert refused.value.scope == "team"
    assert refused.value.message.startswith("The team's budget has ")
    submit(db, second, count=1)


def test_last_months_spend_does_not_count(db: Session) -> None:
    person = make_person(db)
    job = make_job(db, person, status=JobStatus.READY, bfl_task_id="old", cost="50")
    record_charge(db, job)
    from sqlalchemy import update

    db.execute(
        update(Charge)
        .where(Charge.job_id == job.id)
        .values(created_at=month_start() - timedelta(days=2))
    )
    make_budget(db, person, "10", personal=True)
    assert (
        committed_credits(db, team_id=person.team.id, user_id=person.user.id, since=month_start())
        == 0
    )
    submit(db, person)
