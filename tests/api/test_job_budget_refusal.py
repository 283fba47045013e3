"""A refused submission leaves nothing behind, even for a caller that commits after catching it."""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.auth.models import Role
from app.costs.models import Reservation
from app.costs.service import BudgetExceeded, set_budget
from app.errors import RequestInvalid
from app.jobs import messages
from app.jobs.models import Job
from app.jobs.service import create_jobs
from tests.factories import make_person


def _rows(db: Session, team_id: object) -> tuple[int, int]:
    jobs = db.scalar(select(func.count()).select_from(Job).where(Job.team_id == team_id))
    held = db.scalar(
        select(func.count()).select_from(Reservation).where(Reservation.team_id == team_id)
    )
    return int(jobs or 0), int(held or 0)


def test_budget_refusal_keeps_no_jobs_even_when_the_caller_commits(db: Session) -> None:
    person = make_person(db, role=Role.MEMBER)
    # One flux-2-pro image at 1 MP is estimated at 3 credits; the budget holds 5.
    set_budget(db, team_id=person.team.id, user_id=None, monthly_credits=Decimal("5"))
    db.commit()

    with pytest.raises(BudgetExceeded):
        create_jobs(
            db,
            user_id=person.user.id,
            team_id=person.team.id,
            model="flux-2-pro",
            params={"prompt": "too many lighthouses"},
            count=4,
        )
    db.commit()  # a careless caller: nothing refused may survive this

    db.expire_all()
    assert _rows(db, person.team.id) == (0, 0)
    assert messages.pending_messages(db) == []

    # The same session still works for a request inside the budget.
    jobs = create_jobs(
        db,
        user_id=person.user.id,
        team_id=person.team.id,
        model="flux-2-pro",
        params={"prompt": "one lighthouse"},
        count=1,
    )
    assert _rows(db, person.team.id) == (1, 1)
    assert jobs[0].prompt == "one lighthouse"
    messages.discard_pending(db)


def test_a_person_budget_refusal_keeps_no_jobs_either(db: Session) -> None:
    person = make_person(db, role=Role.MEMBER)
    set_budget(db, team_id=person.team.id, user_id=person.user.id, monthly_credits=Decimal("2"))
    db.commit()
    with pytest.raises(BudgetExceeded) as refused:
        create_jobs(
            db,
            user_id=person.user.id,
            team_id=person.team.id,
            model="flux-2-pro",
            params={"prompt": "a lighthouse"},
        )
    assert refused.value.scope == "person"
    db.commit()
    assert _rows(db, person.team.id) == (0, 0)


def test_invalid_requests_keep_no_jobs(db: Session) -> None:
    person = make_person(db, role=Role.MEMBER)
    db.commit()
    with pytest.raises(RequestInvalid):
        create_jobs(
            db,
            user_id=person.user.id,
            team_id=person.team.id,
            model="flux-2-pro",
            params={"prompt": "a lighthouse", "width": 10**400},
        )
    with pytest.raises(RequestInvalid) as refused:
        create_jobs(
            db,
            user_id=person.user.id,
            team_id=person.team.id,
            model="flux-2-pro",
            params={
                "prompt": "a lighthouse",
                "input_image": f"stored:teams/{person.team.id}/references/x\x00.png",
            },
        )
    assert refused.value.errors[0].field == "params.input_image"
    db.commit()
    assert _rows(db, person.team.id) == (0, 0)
