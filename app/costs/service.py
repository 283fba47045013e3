"""Budget reservations, the credit ledger and their settlement: the rules for money."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from app.costs.models import Budget, Charge, Reservation, ReservationState
from app.db import utcnow
from app.jobs.models import Job
from app.settings import get_settings


class BudgetExceeded(Exception):
    """A submission would cross a monthly budget; the message says what is left."""

    code = "budget_exceeded"

    def __init__(self, message: str, *, scope: str, remaining: Decimal, needed: Decimal) -> None:
        super().__init__(message)
        self.message = message
        self.scope = scope
        self.remaining = remaining
        self.needed = needed


def month_start(now: datetime | None = None) -> datetime:
    now = now or utcnow()
    return now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def credits_to_usd(credits: Decimal) -> Decimal:
    return (credits * get_settings().CREDIT_PRICE_USD).quantize(Decimal("0.0001"))


def _lock_team_budgets(db: Session, team_id: uuid.UUID) -> None:
    # Serializes every reservation of one team, so concurrent submissions cannot each see the
    # same remaining budget. Transaction-scoped: released at commit or rollback.
    db.execute(
        text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
        {"key": f"budget:{team_id}"},
    )


def committed_credits(
    db: Session, team_id: uuid.UUID, user_id: uuid.UUID | None, since: datetime
) -> Decimal:
    """Credits charged this period plus credits still held for unfinished jobs."""
    charged = select(func.coalesce(func.sum(Charge.credits), 0)).where(
        Charge.team_id == team_id, Charge.created_at >= since
    )
    held = select(func.coalesce(func.sum(Reservation.credits), 0)).where(
        Reservation.team_id == team_id,
        Reservation.state == ReservationState.HELD.value,
        Reservation.created_at >= since,
    )
    if user_id is not None:
        charged = charged.where(Charge.user_id == user_id)
        held = held.where(Reservation.user_id == user_id)
    return Decimal(db.scalar(charged) or 0) + Decimal(db.scalar(held) or 0)


def budget_for(db: Session, team_id: uuid.UUID, user_id: uuid.UUID | None) -> Budget | None:
    stmt = select(Budget).where(Budget.team_id == team_id)
    stmt = stmt.where(Budget.user_id.is_(None) if user_id is None else Budget.user_id == user_id)
    return db.scalars(stmt).first()


def reserve_for_jobs(db: Session, jobs: Sequence[Job]) -> None:
    """Hold each job's estimated cost against the team's and the person's monthly budgets.

    Raises BudgetExceeded, before anything is held, when the request would cross either budget.
    """
    if not jobs:
        return
    team_id, user_id = jobs[0].team_id, jobs[0].user_id
    needed = sum((job.estimated_credits for job in jobs), Decimal(0))
    _lock_team_budgets(db, team_id)
    since = month_start()
    for scope, scoped_user in (("person", user_id), ("team", None)):
        budget = budget_for(db, team_id, scoped_user)
        if budget is None:
            continue
        remaining = budget.monthly_credits - committed_credits(db, team_id, scoped_user, since)
        if needed > remaining:
            whose = "your" if scope == "person" else "the team's"
            raise BudgetExceeded(
                f"This needs about {needed:.2f} credits but {whose} monthly budget has "
                f"{max(remaining, Decimal(0)):.2f} left; ask a manager to raise it, "
                "or request fewer or smaller images.",
                scope=scope,
                remaining=remaining,
                needed=needed,
            )
    for job in jobs:
        db.add(
            Reservation(
                job_id=job.id, team_id=team_id, user_id=user_id, credits=job.estimated_credits
            )
        )
    db.flush()


def record_charge(db: Session, job: Job) -> None:
    """Write the ledger row for the cost BFL reported, once per job, and settle its reservation."""
    credits = job.cost_credits if job.cost_credits is not None else job.estimated_credits
    db.execute(
        insert(Charge)
        .values(
            id=uuid.uuid4(),
            job_id=job.id,
            team_id=job.team_id,
            user_id=job.user_id,
            model=job.model,
            credits=credits,
            usd=credits_to_usd(credits),
        )
        .on_conflict_do_nothing(index_elements=[Charge.job_id])
    )
    _resolve(db, job.id, ReservationState.SETTLED)


def on_job_terminal(db: Session, job: Job) -> None:
    """Settle or release the reservation of a job that just reached a terminal state."""
    charged = db.scalar(select(Charge.id).where(Charge.job_id == job.id)) is not None
    if charged:
        _resolve(db, job.id, ReservationState.SETTLED)
    elif job.error_code == "submission_unknown":
        # BFL may have accepted (and charged) the POST; keep the estimate held for this month
        # rather than let the budget believe the money was not spent.
        return
    else:
        _resolve(db, job.id, ReservationState.RELEASED)


def _resolve(db: Session, job_id: uuid.UUID, state: ReservationState) -> None:
    db.execute(
        update(Reservation)
        .where(Reservation.job_id == job_id, Reservation.state == ReservationState.HELD.value)
        .values(state=state.value, resolved_at=utcnow())
    )
