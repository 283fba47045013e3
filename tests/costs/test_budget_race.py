"""Twenty submissions at once at a budget's edge: the budget is never overspent."""

from __future__ import annotations

import threading
import uuid
from decimal import Decimal

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from app.costs.models import Charge, Reservation, ReservationState
from app.costs.service import BudgetExceeded, rebuild_rollup, set_budget
from app.db import get_sessionmaker
from app.jobs.models import Job
from app.jobs.service import create_jobs
from app.projects.models import Project
from app.projects.service import Changer, create_project
from tests.costs.factories import make_budget, make_charge
from tests.factories import Person, make_person

THREADS = 20
ACCEPTED = 7


def _submit(
    who: tuple[uuid.UUID, uuid.UUID, uuid.UUID | None],
    barrier: threading.Barrier,
    outcomes: list[str],
) -> None:
    """What a real submission does: create the jobs and reserve in one transaction, commit."""
    session = get_sessionmaker()()
    try:
        barrier.wait(timeout=30)
        create_jobs(
            session,
            user_id=who[0],
            team_id=who[1],
            model="flux-2-pro",
            params={"prompt": "a paper boat on a puddle", "width": 1024, "height": 1024},
            project_id=who[2],
        )
        session.commit()
        outcomes.append("accepted")
    except BudgetExceeded:
        session.rollback()
        outcomes.append("refused")
    except Exception as exc:  # reported by the assertion below
        session.rollback()
        outcomes.append(f"error: {exc!r}")
    finally:
        session.close()


def _price(db: Session, person: Person) -> Decimal:
    (job,) = create_jobs(
        db,
        user_id=person.user.id,
        team_id=person.team.id,
        model="flux-2-pro",
        params={"prompt": "probe", "width": 1024, "height": 1024},
    )
    price = job.estimated_credits
    db.rollback()
    return price


@pytest.mark.parametrize("scope", ["person", "team", "project"])
def test_concurrent_submissions_never_overspend(committed_db: Session, scope: str) -> None:
    db = committed_db
    owner = make_person(db)
    people = [owner] * THREADS if scope == "person" else [owner]
    if scope in ("team", "project"):
        people += [make_person(db, team=owner.team) for _ in range(THREADS - 1)]
    project: Project | None = None
    if scope == "project":
        changer = Changer(team_id=owner.team.id, user_id=owner.user.id, email=owner.user.email)
        project = create_project(db, changer, name="Client A")
        # Spend in another project is not this project's: it must not count against it.
        make_charge(db, owner, "1000")
    db.commit()
    price = _price(db, owner)
    assert price > 0
    # Charges already made this month, then a budget with room for exactly ACCEPTED more jobs
    # (and half a job to spare, so "just fits" and "one too many" are both at stake).
    charged_job = make_charge(db, owner, "10")
    budget = Decimal("10") + price * ACCEPTED + price / 2
    if project is not None:
        moved = {"project_id": project.id}
        db.execute(update(Job).where(Job.id == charged_job.id).values(moved))
        db.execute(update(Charge).where(Charge.job_id == charged_job.id).values(moved))
        rebuild_rollup(db, team_id=owner.team.id)
        set_budget(
            db, team_id=owner.team.id, user_id=None, project_id=project.id, monthly_credits=budget
        )
    else:
        make_budget(db, owner, budget, personal=scope == "person")
    db.commit()

    # Plain ids: the threads must not touch this test's session (or its expired objects).
    project_id = project.id if project is not None else None
    callers = [(person.user.id, person.team.id, project_id) for person in people]
    barrier = threading.Barrier(THREADS)
    outcomes: list[str] = []
    threads = [threading.Thread(target=_submit, args=(who, barrier, outcomes)) for who in callers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert len(outcomes) == THREADS
    assert outcomes.count("accepted") == ACCEPTED, outcomes
    assert outcomes.count("refused") == THREADS - ACCEPTED, outcomes
    team = owner.team.id
    held = db.scalar(
        select(func.coalesce(func.sum(Reservation.credits), 0)).where(
            Reservation.team_id == team, Reservation.state == ReservationState.HELD.value
        )
    )
    charged = db.scalar(
        select(func.sum(Charge.credits)).where(
            Charge.team_id == team,
            Charge.project_id == project_id if project_id is not None else Charge.team_id == team,
        )
    )
    assert held == price * ACCEPTED
    assert charged + held <= budget
    # Refused submissions left no jobs behind.
    before = 2 if scope == "project" else 1
    assert db.scalar(select(func.count()).select_from(Job).where(Job.team_id == team)) == (
        ACCEPTED + before
    )
