"""Budget reservations, the credit ledger and their settlement: the rules for money.

Also the cost reports (aggregated in SQL over the `charges` indexes), budgets set by managers,
and the account's credit balance read from BFL. Every report is scoped to one team, and to one
person when a member asks; all times are UTC.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from functools import cache
from typing import Any, Literal

from sqlalchemy import (
    ColumnElement,
    Date,
    Select,
    Table,
    bindparam,
    cast,
    delete,
    func,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from app.audit.service import record
from app.auth.models import Membership, User
from app.bfl.client import BFLClient
from app.costs.models import (
    Budget,
    Charge,
    ChargeOutcome,
    ChargePromptMonth,
    CreditBalance,
    Reservation,
    ReservationState,
)
from app.costs.schemas import (
    BudgetLine,
    BudgetState,
    CostSummary,
    CreditOutlook,
    DaySpend,
    LedgerRow,
    ModelSpend,
    Money,
    MySpend,
    OutcomeSpend,
    PeriodOut,
    PersonSpend,
    ProjectSpend,
    PromptSpend,
    SpendTotal,
)
from app.db import utcnow
from app.errors import FieldProblem, Forbidden, NotFound, StudioError, status_for
from app.jobs.costing import cost_or_estimate
from app.jobs.models import Job, JobStatus
from app.projects.models import ChargeDay, Project
from app.projects.service import get_project
from app.settings import get_settings

#: Share of a budget at which people are warned.
WARNING_SHARE = Decimal("0.8")
#: Window of the burn rate behind "days of credit left".
RATE_WINDOW_DAYS = 7
#: Job states whose charges bought no image.
LOST_STATUSES = (JobStatus.FAILED, JobStatus.MODERATED, JobStatus.CANCELLED)
#: Credit balance readings kept; older ones only grow the table.
BALANCE_HISTORY_DAYS = 90
_CENT = Decimal("0.01")
_ZERO = Decimal(0)


class BudgetExceeded(StudioError):
    """A submission would cross a monthly budget (402); the message says what is left.

    It names no field: the whole request (its count, sizes and references) is what costs.
    """

    def __init__(self, message: str, *, scope: str, remaining: Decimal, needed: Decimal) -> None:
        super().__init__(status_for("budget_exceeded"), "budget_exceeded", message)
        self.scope = scope
        self.remaining = remaining
        self.needed = needed


# --- periods ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Period:
    """A reporting window in UTC: `start` inclusive, `end` exclusive."""

    label: str
    start: datetime
    end: datetime

    @property
    def first_day(self) -> date:
        return self.start.date()

    @property
    def last_day(self) -> date:
        return (self.end - timedelta(microseconds=1)).date()

    def out(self) -> PeriodOut:
        return PeriodOut(label=self.label, start=self.start, end=self.end)


def month_start(now: datetime | None = None) -> datetime:
    now = now or utcnow()
    return now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def this_month(now: datetime | None = None) -> Period:
    start = month_start(now)
    end = (start + timedelta(days=32)).replace(day=1)
    return Period(f"This month ({start:%B %Y})", start, end)


def last_days(days: int = 30, now: datetime | None = None) -> Period:
    """The last `days` calendar days in UTC, today included."""
    today = (now or utcnow()).astimezone(UTC).date()
    return Period(
        f"Last {days} days",
        _midnight(today - timedelta(days=days - 1)),
        _midnight(today + timedelta(days=1)),
    )


def date_range(first: date, last: date) -> Period:
    """The UTC days from `first` to `last`, both included."""
    if last < first:
        raise ValueError("the end date is before the start date")
    return Period(
        f"{first.isoformat()} to {last.isoformat()}",
        _midnight(first),
        _midnight(last + timedelta(days=1)),
    )


@dataclass(frozen=True)
class Scope:
    """Whose charges a report covers: a whole team, or one person in it."""

    team_id: uuid.UUID
    user_id: uuid.UUID | None = None
    #: Only this project's charges (None: every project of the team).
    project_id: uuid.UUID | None = None

    @property
    def kind(self) -> Literal["team", "person"]:
        return "team" if self.user_id is None else "person"


# --- money -----------------------------------------------------------------------------------


def credits_to_usd(credits: Decimal) -> Decimal:
    return (Decimal(credits) * get_settings().CREDIT_PRICE_USD).quantize(Decimal("0.0001"))


def _money(credits: Any) -> Money:
    value = Decimal(credits or 0)
    return Money(credits=value, usd=credits_to_usd(value))


# --- reservations and the ledger -------------------------------------------------------------


def _lock_team_budgets(db: Session, team_id: uuid.UUID) -> None:
    # Serializes every reservation of one team, so concurrent submissions cannot each see the
    # same remaining budget. Transaction-scoped: released at commit or rollback, and safe behind
    # transaction-pooling proxies.
    db.execute(
        text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
        {"key": f"budget:{team_id}"},
    )


def committed_credits(
    db: Session,
    *,
    team_id: uuid.UUID,
    user_id: uuid.UUID | None,
    since: datetime,
    project_id: uuid.UUID | None = None,
) -> Decimal:
    """Credits charged since `since` plus credits still held for unfinished jobs, for the
    team, one person (`user_id`) or one project (`project_id`).

    One statement, so one snapshot: a worker settling a reservation (charge written,
    reservation no longer held) between two separate reads would hide that job's cost.
    """
    rolled_days, ledger_since = _split_at_today(since)
    rolled = select(func.coalesce(func.sum(ChargeDay.credits), 0)).where(
        ChargeDay.team_id == team_id,
        ChargeDay.day >= rolled_days[0],
        ChargeDay.day < rolled_days[1],
    )
    charged = select(func.coalesce(func.sum(Charge.credits), 0)).where(
        Charge.team_id == team_id, Charge.created_at >= ledger_since
    )
    held = select(func.coalesce(func.sum(Reservation.credits), 0)).where(
        Reservation.team_id == team_id,
        Reservation.state == ReservationState.HELD.value,
        Reservation.created_at >= since,
    )
    if user_id is not None:
        rolled = rolled.where(ChargeDay.user_id == user_id)
        charged = charged.where(Charge.user_id == user_id)
        held = held.where(Reservation.user_id == user_id)
    if project_id is not None:
        rolled = rolled.where(ChargeDay.project_id == project_id)
        charged = charged.where(Charge.project_id == project_id)
        held = held.where(Reservation.project_id == project_id)
    total = db.scalar(
        select(rolled.scalar_subquery() + charged.scalar_subquery() + held.scalar_subquery())
    )
    return Decimal(total or 0)


def _split_at_today(since: datetime) -> tuple[tuple[date, date], datetime]:
    """Charges since `since`, split into whole past days the daily rollup answers (first day
    included, last excluded) and the time from which the ledger itself is read (today's
    midnight, UTC; `since` itself when it is not a midnight, leaving the rollup nothing)."""
    midnight = _midnight(utcnow().astimezone(UTC).date())
    first = since.astimezone(UTC)
    if first.time() != time.min or first >= midnight:
        return (first.date(), first.date()), since
    return (first.date(), midnight.date()), midnight


def _budget_scope(
    user_id: uuid.UUID | None, project_id: uuid.UUID | None
) -> list[ColumnElement[bool]]:
    """The WHERE of one budget: the team's own, a person's or a project's."""
    if user_id is not None and project_id is not None:
        raise ValueError("a budget is for a person or for a project, not both")
    return [
        Budget.user_id.is_(None) if user_id is None else Budget.user_id == user_id,
        Budget.project_id.is_(None) if project_id is None else Budget.project_id == project_id,
    ]


def budget_for(
    db: Session,
    *,
    team_id: uuid.UUID,
    user_id: uuid.UUID | None,
    project_id: uuid.UUID | None = None,
) -> Budget | None:
    """The team's budget (both ids None), a person's or a project's; None when not set."""
    stmt = select(Budget).where(Budget.team_id == team_id, *_budget_scope(user_id, project_id))
    return db.scalars(stmt).first()


@dataclass(frozen=True)
class BudgetCheck:
    """One monthly budget a request is checked against, with what is left of it (credits)."""

    scope: Literal["team", "person", "project"]
    name: str
    monthly: Decimal
    remaining: Decimal

    def refusal(self, needed: Decimal) -> str:
        left = f"{max(self.remaining, _ZERO):.2f} of {self.monthly:.2f} credits left this month"
        who = {
            "team": "The team's budget has",
            "person": "Your budget has",
            "project": f"Project '{self.name}' has",
        }[self.scope]
        return (
            f"{who} {left}; this request needs {needed:.2f}. Ask a manager to raise it, "
            "or request fewer or smaller images."
        )


def budget_checks(
    db: Session, *, team_id: uuid.UUID, user_id: uuid.UUID, project_id: uuid.UUID
) -> list[BudgetCheck]:
    """The budgets a job of this person in this project must fit: the person's, the project's
    and the team's, those that are set, each with what is left of it this month."""
    since = month_start()
    checks: list[BudgetCheck] = []
    scopes: list[tuple[Literal["team", "person", "project"], Any, Any]] = [
        ("person", user_id, None),
        ("project", None, project_id),
        ("team", None, None),
    ]
    for scope, scoped_user, scoped_project in scopes:
        budget = budget_for(db, team_id=team_id, user_id=scoped_user, project_id=scoped_project)
        if budget is None:
            continue
        used = committed_credits(
            db, team_id=team_id, user_id=scoped_user, since=since, project_id=scoped_project
        )
        name = (
            get_project(db, team_id=team_id, project_id=project_id).name if scoped_project else ""
        )
        checks.append(
            BudgetCheck(scope, name, budget.monthly_credits, budget.monthly_credits - used)
        )
    return checks


def reserve_for_jobs(db: Session, jobs: Sequence[Job], *, enforce: bool = True) -> None:
    """Hold each job's estimated cost against the person's, the project's and the team's
    monthly budgets.

    Call inside the transaction that creates the jobs, then commit: the team's advisory lock is
    held until then, so concurrent submissions are checked one after another. Raises
    BudgetExceeded, before anything is held, when the request would cross any budget; the
    tightest one (least left) is the one named. The caller should roll back so the jobs vanish.
    `enforce=False` (a request a manager approved) holds the estimate without checking budgets.
    """
    if not jobs:
        return
    team_id, user_id, project_id = jobs[0].team_id, jobs[0].user_id, jobs[0].project_id
    if any(
        (job.team_id, job.user_id, job.project_id) != (team_id, user_id, project_id) for job in jobs
    ):
        raise ValueError("reserve_for_jobs takes the jobs of one person in one project")
    # Reservations reference the jobs; make sure their rows exist first.
    db.flush()
    needed = sum((Decimal(job.estimated_credits or 0) for job in jobs), _ZERO)
    _lock_team_budgets(db, team_id)
    checks = (
        budget_checks(db, team_id=team_id, user_id=user_id, project_id=project_id)
        if enforce
        else []
    )
    short = [check for check in checks if needed > check.remaining]
    if short:
        tightest = min(short, key=lambda check: check.remaining)
        raise BudgetExceeded(
            tightest.refusal(needed),
            scope=tightest.scope,
            remaining=tightest.remaining,
            needed=needed,
        )
    for job in jobs:
        db.add(
            Reservation(
                job_id=job.id,
                team_id=team_id,
                user_id=user_id,
                project_id=project_id,
                credits=Decimal(job.estimated_credits or 0),
            )
        )
    db.flush()


def record_charge(db: Session, job: Job) -> bool:
    """Write the ledger row for the cost BFL reported, once per job, and settle its reservation.

    When BFL reported no cost the estimate stands in, and is written to `jobs.cost_credits`
    too, so the ledger always equals the sum of the jobs' costs. Returns True when this call
    wrote the row (False: the job was charged already).
    """
    credits = cost_or_estimate(db, job)
    written = db.execute(
        _statements().charge_insert,
        {
            "id": uuid.uuid4(),
            "job_id": job.id,
            "team_id": job.team_id,
            "user_id": job.user_id,
            "project_id": job.project_id,
            "model": job.model,
            "credits": credits,
            "usd": credits_to_usd(credits),
            "created_at": utcnow(),
        },
    ).first()
    if written is not None:
        day = written.created_at.astimezone(UTC).date()
        _roll_up(db, job, credits, day=day)
        _add_outcome(db, job, job.status, day=day, credits=credits, charges=1)
        _add_prompt_month(db, job, credits, at=written.created_at)
    _resolve(db, job.id, ReservationState.SETTLED)
    return written is not None


@dataclass(frozen=True)
class _HotStatements:
    """The statements every charged job runs, built once per process.

    Core statements on the tables with bound parameters: building an upsert (its `excluded`
    alias above all) and going through the ORM's bulk layer for every job cost more CPU than
    the round trip itself; these are compiled once and then only executed.
    """

    charge_insert: Any
    day_upsert: Any
    outcome_upsert: Any
    outcome_decrement: Any
    prompt_month_upsert: Any
    reservation_resolve: Any


def _upsert(table: Table, keys: list[str], set_: dict[str, Any]) -> Any:
    # No .values(): executed with one parameter per column, it inserts those columns.
    stmt = insert(table)
    return stmt.on_conflict_do_update(
        index_elements=[table.c[name] for name in keys],
        set_={name: expression(table.c, stmt.excluded) for name, expression in set_.items()},
    )


def _table(model: Any) -> Table:
    table: Table = model.__table__
    return table


@cache
def _statements() -> _HotStatements:
    charges, days = _table(Charge), _table(ChargeDay)
    outcomes, months = _table(ChargeOutcome), _table(ChargePromptMonth)
    reservations = _table(Reservation)
    rollup = ["team_id", "day", "project_id", "user_id", "model"]
    return _HotStatements(
        charge_insert=insert(charges)
        .on_conflict_do_nothing(index_elements=[charges.c.job_id])
        .returning(charges.c.id, charges.c.created_at),
        day_upsert=_upsert(
            days,
            rollup,
            {
                "credits": lambda c, new: c.credits + new.credits,
                "charges": lambda c, new: c.charges + new.charges,
            },
        ),
        outcome_upsert=_upsert(
            outcomes,
            [*rollup, "status"],
            {
                "credits": lambda c, new: c.credits + new.credits,
                "charges": lambda c, new: c.charges + new.charges,
            },
        ),
        outcome_decrement=update(outcomes)
        .where(*(outcomes.c[name] == bindparam(f"k_{name}") for name in [*rollup, "status"]))
        .values(
            credits=outcomes.c.credits - bindparam("d_credits", type_=outcomes.c.credits.type),
            charges=outcomes.c.charges - bindparam("d_charges", type_=outcomes.c.charges.type),
        ),
        prompt_month_upsert=_upsert(
            months,
            ["team_id", "month", "project_id", "user_id", "prompt_md5"],
            {
                "credits": lambda c, new: c.credits + new.credits,
                "charges": lambda c, new: c.charges + new.charges,
                "last_charged_at": lambda c, new: func.greatest(
                    c.last_charged_at, new.last_charged_at
                ),
            },
        ),
        # No .values(): executed with `state` and `resolved_at`, it sets those columns.
        reservation_resolve=update(reservations).where(
            reservations.c.job_id == bindparam("k_job_id"),
            reservations.c.state == ReservationState.HELD.value,
        ),
    )


def lock_team_budgets(db: Session, team_id: uuid.UUID) -> None:
    """Take the team's budget lock (held until this transaction ends): reservations and moves
    of jobs between projects run one after another, so per-project figures never cross."""
    _lock_team_budgets(db, team_id)


@dataclass(frozen=True)
class _RollupKey:
    team_id: uuid.UUID
    day: date
    project_id: uuid.UUID
    user_id: uuid.UUID
    model: str


def _roll_up(db: Session, job: Job, credits: Decimal, *, day: date) -> None:
    """Add one charge to its day's rollup row (`charge_days`), in the ledger's transaction."""
    key = _RollupKey(job.team_id, day, job.project_id, job.user_id, job.model)
    _add_to_day(db, key, credits)


def _add_to_day(db: Session, key: _RollupKey, credits: Decimal) -> None:
    """Add one charge of `credits` to the rollup row `key` (made when missing)."""
    db.execute(
        _statements().day_upsert,
        {
            "team_id": key.team_id,
            "day": key.day,
            "project_id": key.project_id,
            "user_id": key.user_id,
            "model": key.model,
            "credits": credits,
            "charges": 1,
        },
    )


def _add_outcome(
    db: Session, job: Job, status: str, *, day: date, credits: Decimal, charges: int
) -> None:
    """Add `charges` charges of `credits` to the job's row of `charge_outcomes` under
    `status`, in the caller's transaction."""
    db.execute(
        _statements().outcome_upsert,
        {
            "team_id": job.team_id,
            "day": day,
            "project_id": job.project_id,
            "user_id": job.user_id,
            "model": job.model,
            "status": str(status),
            "credits": credits,
            "charges": charges,
        },
    )


def _add_prompt_month(db: Session, job: Job, credits: Decimal, *, at: datetime) -> None:
    """Add one charge to its month's row of `charge_prompt_months`."""
    db.execute(
        _statements().prompt_month_upsert,
        {
            "team_id": job.team_id,
            "month": at.astimezone(UTC).date().replace(day=1),
            "project_id": job.project_id,
            "user_id": job.user_id,
            "prompt_md5": hashlib.md5(job.prompt.encode(), usedforsecurity=False).hexdigest(),
            "prompt": job.prompt,
            "credits": credits,
            "charges": 1,
            "last_charged_at": at,
        },
    )


def _rebuild_prompt_months(db: Session, team_id: uuid.UUID) -> None:
    """Recompute the team's `charge_prompt_months` from its ledger rows and their prompts."""
    db.execute(delete(ChargePromptMonth).where(ChargePromptMonth.team_id == team_id))
    month = cast(func.date_trunc("month", func.timezone("UTC", Charge.created_at)), Date)
    digest = func.md5(Job.prompt)
    db.execute(
        insert(ChargePromptMonth).from_select(
            [
                "team_id",
                "month",
                "project_id",
                "user_id",
                "prompt_md5",
                "prompt",
                "credits",
                "charges",
                "last_charged_at",
            ],
            select(
                Charge.team_id,
                month,
                Charge.project_id,
                Charge.user_id,
                digest,
                func.min(Job.prompt),
                func.sum(Charge.credits),
                func.count(),
                func.max(Charge.created_at),
            )
            .join(Job, Job.id == Charge.job_id)
            .where(Charge.team_id == team_id)
            .group_by(Charge.team_id, month, Charge.project_id, Charge.user_id, digest),
        )
    )


def _take_from_day(db: Session, key: _RollupKey, credits: Decimal) -> None:
    """Take one charge of `credits` off the rollup row `key`; a row left with none goes."""
    where = (
        ChargeDay.team_id == key.team_id,
        ChargeDay.day == key.day,
        ChargeDay.project_id == key.project_id,
        ChargeDay.user_id == key.user_id,
        ChargeDay.model == key.model,
    )
    db.execute(
        update(ChargeDay)
        .where(*where)
        .values(credits=ChargeDay.credits - credits, charges=ChargeDay.charges - 1)
    )
    db.execute(delete(ChargeDay).where(*where, ChargeDay.charges <= 0))


def move_job_costs(
    db: Session, *, team_id: uuid.UUID, job_id: uuid.UUID, to_project_id: uuid.UUID
) -> Decimal:
    """Move one job's ledger row, its reservation and its share of the daily rollup to the
    project `to_project_id`; returns the credits moved (0 when the job has no charge yet).

    The caller holds `lock_team_budgets` and the job's row lock, and changes the job's own
    `project_id` in the same transaction, so per-project sums stay equal to the ledger's and
    the team's totals do not change.
    """
    db.execute(
        update(Reservation)
        .where(Reservation.job_id == job_id, Reservation.team_id == team_id)
        .values(project_id=to_project_id)
    )
    charge = db.execute(
        select(Charge.project_id, Charge.user_id, Charge.model, Charge.credits, Charge.created_at)
        .where(Charge.job_id == job_id, Charge.team_id == team_id)
        .with_for_update()
    ).first()
    if charge is None or charge.project_id == to_project_id:
        return _ZERO
    db.execute(update(Charge).where(Charge.job_id == job_id).values(project_id=to_project_id))
    day = charge.created_at.astimezone(UTC).date()
    old = _RollupKey(team_id, day, charge.project_id, charge.user_id, charge.model)
    _take_from_day(db, old, charge.credits)
    _add_to_day(
        db, _RollupKey(team_id, day, to_project_id, charge.user_id, charge.model), charge.credits
    )
    job = db.execute(select(Job.status, Job.prompt).where(Job.id == job_id)).one()
    status = getattr(job.status, "value", job.status)
    _move_outcome(db, old, status, charge.credits, to_project_id)
    _move_prompt_month(db, old, job.prompt, charge, to_project_id)
    return Decimal(charge.credits)


def _move_outcome(
    db: Session, old: _RollupKey, status: str, credits: Decimal, to_project_id: uuid.UUID
) -> None:
    """Move one charge of `credits` from `old`'s `charge_outcomes` row (under `status`) to the
    same row of project `to_project_id`; a row left with no charges goes."""
    where = (
        ChargeOutcome.team_id == old.team_id,
        ChargeOutcome.day == old.day,
        ChargeOutcome.project_id == old.project_id,
        ChargeOutcome.user_id == old.user_id,
        ChargeOutcome.model == old.model,
        ChargeOutcome.status == status,
    )
    db.execute(
        update(ChargeOutcome)
        .where(*where)
        .values(credits=ChargeOutcome.credits - credits, charges=ChargeOutcome.charges - 1)
    )
    db.execute(delete(ChargeOutcome).where(*where, ChargeOutcome.charges <= 0))
    db.execute(
        _statements().outcome_upsert,
        {
            "team_id": old.team_id,
            "day": old.day,
            "project_id": to_project_id,
            "user_id": old.user_id,
            "model": old.model,
            "status": status,
            "credits": credits,
            "charges": 1,
        },
    )


def _move_prompt_month(
    db: Session, old: _RollupKey, prompt: str, charge: Any, to_project_id: uuid.UUID
) -> None:
    """Move one charge from `old`'s `charge_prompt_months` row to project `to_project_id`'s.

    The old row keeps its `last_charged_at` (it only orders prompts charged at the same
    count); a row left with no charges goes.
    """
    month = old.day.replace(day=1)
    digest = hashlib.md5(prompt.encode(), usedforsecurity=False).hexdigest()
    where = (
        ChargePromptMonth.team_id == old.team_id,
        ChargePromptMonth.month == month,
        ChargePromptMonth.project_id == old.project_id,
        ChargePromptMonth.user_id == old.user_id,
        ChargePromptMonth.prompt_md5 == digest,
    )
    db.execute(
        update(ChargePromptMonth)
        .where(*where)
        .values(
            credits=ChargePromptMonth.credits - charge.credits,
            charges=ChargePromptMonth.charges - 1,
        )
    )
    db.execute(delete(ChargePromptMonth).where(*where, ChargePromptMonth.charges <= 0))
    db.execute(
        _statements().prompt_month_upsert,
        {
            "team_id": old.team_id,
            "month": month,
            "project_id": to_project_id,
            "user_id": old.user_id,
            "prompt_md5": digest,
            "prompt": prompt,
            "credits": charge.credits,
            "charges": 1,
            "last_charged_at": charge.created_at,
        },
    )


def rebuild_rollup(db: Session, *, team_id: uuid.UUID) -> None:
    """Recompute the team's `charge_days`, `charge_outcomes` and `charge_prompt_months`
    from its ledger rows (after
    rows were loaded or re-dated outside `record_charge`, e.g. an import). Flushes."""
    _rebuild_outcomes(db, team_id)
    _rebuild_prompt_months(db, team_id)
    db.execute(delete(ChargeDay).where(ChargeDay.team_id == team_id))
    day = cast(func.timezone("UTC", Charge.created_at), Date)
    db.execute(
        insert(ChargeDay).from_select(
            ["team_id", "day", "project_id", "user_id", "model", "credits", "charges"],
            select(
                Charge.team_id,
                day,
                Charge.project_id,
                Charge.user_id,
                Charge.model,
                func.sum(Charge.credits),
                func.count(),
            )
            .where(Charge.team_id == team_id)
            .group_by(Charge.team_id, day, Charge.project_id, Charge.user_id, Charge.model),
        )
    )
    db.flush()


def _rebuild_outcomes(db: Session, team_id: uuid.UUID) -> None:
    """Recompute the team's `charge_outcomes` from its ledger rows and their jobs' states."""
    db.execute(delete(ChargeOutcome).where(ChargeOutcome.team_id == team_id))
    day = cast(func.timezone("UTC", Charge.created_at), Date)
    db.execute(
        insert(ChargeOutcome).from_select(
            ["team_id", "day", "project_id", "user_id", "model", "status", "credits", "charges"],
            select(
                Charge.team_id,
                day,
                Charge.project_id,
                Charge.user_id,
                Charge.model,
                Job.status,
                func.sum(Charge.credits),
                func.count(),
            )
            .join(Job, Job.id == Charge.job_id)
            .where(Charge.team_id == team_id)
            .group_by(
                Charge.team_id, day, Charge.project_id, Charge.user_id, Charge.model, Job.status
            ),
        )
    )


def on_job_terminal(db: Session, job: Job, previous: str) -> None:
    """Settle or release the reservation of a job that just reached a terminal state from
    `previous`, and move its charge (if any) to its new state in `charge_outcomes`.

    Charged (or accepted by BFL, which charges on acceptance) → settled to the ledger's cost;
    `submission_unknown` → stays held, since BFL may have charged a POST we never heard back
    from; anything else never reached BFL → released.
    """
    charge = db.execute(
        select(Charge.created_at, Charge.credits).where(Charge.job_id == job.id)
    ).first()
    if charge is not None:
        day = charge.created_at.astimezone(UTC).date()
        db.execute(
            _statements().outcome_decrement,
            {
                "k_team_id": job.team_id,
                "k_day": day,
                "k_project_id": job.project_id,
                "k_user_id": job.user_id,
                "k_model": job.model,
                "k_status": str(previous),
                "d_credits": charge.credits,
                "d_charges": 1,
            },
        )
        _add_outcome(db, job, job.status, day=day, credits=charge.credits, charges=1)
        if previous != JobStatus.PENDING:
            # (A job charged when it became pending had its reservation settled then.)
            _resolve(db, job.id, ReservationState.SETTLED)
    elif job.bfl_task_id is not None:
        # BFL accepted the task, so it charged for it, even if the cost never got recorded.
        record_charge(db, job)
    elif job.error_code == "submission_unknown":
        # Keep the estimate held for its month rather than let the budget believe the money
        # was not spent.
        return
    else:
        _resolve(db, job.id, ReservationState.RELEASED)


def _resolve(db: Session, job_id: uuid.UUID, state: ReservationState) -> None:
    db.execute(
        _statements().reservation_resolve,
        {"k_job_id": job_id, "state": state.value, "resolved_at": utcnow()},
    )


# --- reports ---------------------------------------------------------------------------------


def _charge_filter(
    scope: Scope, period: Period, model: str | None = None
) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = [
        Charge.team_id == scope.team_id,
        Charge.created_at >= period.start,
        Charge.created_at < period.end,
    ]
    if scope.user_id is not None:
        conditions.append(Charge.user_id == scope.user_id)
    if scope.project_id is not None:
        conditions.append(Charge.project_id == scope.project_id)
    if model:
        conditions.append(Charge.model == model)
    return conditions


_SUM = func.coalesce(func.sum(Charge.credits), 0)


def _whole_days(period: Period) -> bool:
    """Whether the period runs midnight to midnight (UTC), so the daily rollup answers it."""
    return period.start.time() == time.min and period.end.time() == time.min


def _rollup_filter(
    scope: Scope, period: Period, model: str | None = None
) -> list[ColumnElement[bool]]:
    """`_charge_filter` on the daily rollup (`charge_days`): the same charges, by whole day."""
    conditions: list[ColumnElement[bool]] = [
        ChargeDay.team_id == scope.team_id,
        ChargeDay.day >= period.first_day,
        ChargeDay.day <= period.last_day,
    ]
    if scope.user_id is not None:
        conditions.append(ChargeDay.user_id == scope.user_id)
    if scope.project_id is not None:
        conditions.append(ChargeDay.project_id == scope.project_id)
    if model:
        conditions.append(ChargeDay.model == model)
    return conditions


_DAY_SUM = func.coalesce(func.sum(ChargeDay.credits), 0)
_DAY_COUNT = func.coalesce(func.sum(ChargeDay.charges), 0)


def spend_total(db: Session, scope: Scope, period: Period, model: str | None = None) -> SpendTotal:
    """Credits, dollars and charges of the scope in the period (from the daily rollup)."""
    if _whole_days(period):
        stmt = select(_DAY_SUM, _DAY_COUNT).where(*_rollup_filter(scope, period, model))
    else:
        stmt = select(_SUM, func.count(Charge.id)).where(*_charge_filter(scope, period, model))
    row = db.execute(stmt).one()
    money = _money(row[0])
    return SpendTotal(credits=money.credits, usd=money.usd, charges=int(row[1]))


def spend_by_person(db: Session, scope: Scope, period: Period) -> list[PersonSpend]:
    """Credits per person of the scope in the period, most first (from the daily rollup)."""
    if not _whole_days(period):
        return _spend_by_person_from_ledger(db, scope, period)
    total = func.sum(ChargeDay.credits)
    rows = db.execute(
        select(ChargeDay.user_id, User.name, User.email, total, func.sum(ChargeDay.charges))
        .join(User, User.id == ChargeDay.user_id)
        .where(*_rollup_filter(scope, period))
        .group_by(ChargeDay.user_id, User.name, User.email)
        .order_by(total.desc(), User.name)
    ).all()
    return _people(rows)


def _spend_by_person_from_ledger(db: Session, scope: Scope, period: Period) -> list[PersonSpend]:
    total = func.sum(Charge.credits)
    rows = db.execute(
        select(Charge.user_id, User.name, User.email, total, func.count(Charge.id))
        .join(User, User.id == Charge.user_id)
        .where(*_charge_filter(scope, period))
        .group_by(Charge.user_id, User.name, User.email)
        .order_by(total.desc(), User.name)
    ).all()
    return _people(rows)


def _people(rows: Sequence[Any]) -> list[PersonSpend]:
    return [
        PersonSpend(
            user_id=user_id,
            name=name,
            email=email,
            charges=int(count),
            **_money(credits).model_dump(),
        )
        for user_id, name, email, credits, count in rows
    ]


def spend_by_project(
    db: Session, scope: Scope, period: Period, model: str | None = None
) -> list[ProjectSpend]:
    """Credits per project of the scope's team (most first), archived projects included."""
    total = func.sum(ChargeDay.credits)
    rows = db.execute(
        select(
            ChargeDay.project_id,
            Project.name,
            Project.archived,
            total,
            func.sum(ChargeDay.charges),
        )
        .join(Project, Project.id == ChargeDay.project_id)
        .where(*_rollup_filter(scope, period, model), Project.team_id == scope.team_id)
        .group_by(ChargeDay.project_id, Project.name, Project.archived)
        .order_by(total.desc(), Project.name)
    ).all()
    return [
        ProjectSpend(
            project_id=project_id,
            name=name,
            archived=archived,
            charges=int(count),
            **_money(credits).model_dump(),
        )
        for project_id, name, archived, credits, count in rows
    ]


def _model_outcome_rows(
    db: Session, scope: Scope, period: Period
) -> list[tuple[str, str, Decimal, int]]:
    """(model, job status, credits, charges): one read serves two reports. Whole days come
    from `charge_outcomes`; other windows join the ledger with the jobs."""
    if _whole_days(period):
        conditions: list[ColumnElement[bool]] = [
            ChargeOutcome.team_id == scope.team_id,
            ChargeOutcome.day >= period.first_day,
            ChargeOutcome.day <= period.last_day,
        ]
        if scope.user_id is not None:
            conditions.append(ChargeOutcome.user_id == scope.user_id)
        if scope.project_id is not None:
            conditions.append(ChargeOutcome.project_id == scope.project_id)
        counted = func.sum(ChargeOutcome.charges)
        rows = db.execute(
            select(
                ChargeOutcome.model,
                ChargeOutcome.status,
                func.sum(ChargeOutcome.credits),
                counted,
            )
            .where(*conditions)
            .group_by(ChargeOutcome.model, ChargeOutcome.status)
            .having(counted > 0)
        ).all()
        return [(model, status, Decimal(c or 0), int(n)) for model, status, c, n in rows]
    rows = db.execute(
        select(Charge.model, Job.status, func.sum(Charge.credits), func.count(Charge.id))
        .join(Job, Job.id == Charge.job_id)
        .where(*_charge_filter(scope, period))
        .group_by(Charge.model, Job.status)
    ).all()
    return [(model, status, Decimal(c or 0), n) for model, status, c, n in rows]


def _by_model(rows: list[tuple[str, str, Decimal, int]]) -> list[ModelSpend]:
    totals: dict[str, list[Any]] = {}
    for model, status, credits, count in rows:
        entry = totals.setdefault(model, [_ZERO, 0, 0])
        entry[0] += credits
        entry[1] += count
        if status == JobStatus.READY:
            entry[2] += count
    result = [
        ModelSpend(
            model=model,
            charges=count,
            ready_images=ready,
            avg_credits_per_job=(credits / count).quantize(_CENT) if count else _ZERO,
            credits_per_ready_image=(credits / ready).quantize(_CENT) if ready else None,
            **_money(credits).model_dump(),
        )
        for model, (credits, count, ready) in totals.items()
    ]
    return sorted(result, key=lambda m: (-m.credits, m.model))


def _by_outcome(rows: list[tuple[str, str, Decimal, int]]) -> list[OutcomeSpend]:
    totals: dict[str, list[Any]] = {}
    for _model, status, credits, count in rows:
        entry = totals.setdefault(status, [_ZERO, 0])
        entry[0] += credits
        entry[1] += count
    result = [
        OutcomeSpend(status=status, charges=count, **_money(credits).model_dump())
        for status, (credits, count) in totals.items()
    ]
    return sorted(result, key=lambda o: (-o.credits, o.status))


def spend_by_model(db: Session, scope: Scope, period: Period) -> list[ModelSpend]:
    """Credits per model, with the average per job and per image actually delivered."""
    return _by_model(_model_outcome_rows(db, scope, period))


def spend_by_day(db: Session, scope: Scope, period: Period) -> list[DaySpend]:
    """One entry per UTC day of the period up to today, days without charges included."""
    if _whole_days(period):
        stmt = (
            select(ChargeDay.day, func.sum(ChargeDay.credits), func.sum(ChargeDay.charges))
            .where(*_rollup_filter(scope, period))
            .group_by(ChargeDay.day)
        )
    else:
        day = cast(func.timezone("UTC", Charge.created_at), Date)
        stmt = (
            select(day, func.sum(Charge.credits), func.count(Charge.id))
            .where(*_charge_filter(scope, period))
            .group_by(day)
        )
    found = {row[0]: (row[1], int(row[2])) for row in db.execute(stmt).all()}
    last = min(period.last_day, utcnow().date())
    last = max(last, max(found, default=last))
    days = []
    current = period.first_day
    while current <= last:
        credits, count = found.get(current, (0, 0))
        days.append(DaySpend(day=current, charges=count, **_money(credits).model_dump()))
        current += timedelta(days=1)
    return days


def top_prompts(db: Session, scope: Scope, period: Period, limit: int = 10) -> list[PromptSpend]:
    """The prompts that cost most in the period (same text, summed over its jobs); from the
    monthly prompt rollup when the period is whole calendar months (the dashboard's "this
    month"), else from the ledger joined with the jobs."""
    if _whole_months(period):
        return _top_prompts_of_months(db, scope, period, limit)
    total = func.sum(Charge.credits)
    rows = db.execute(
        select(Job.prompt, total, func.count(Charge.id), func.max(Charge.created_at))
        .join(Job, Job.id == Charge.job_id)
        .where(*_charge_filter(scope, period))
        .group_by(Job.prompt)
        .order_by(total.desc(), func.max(Charge.created_at).desc())
        .limit(limit)
    ).all()
    return [
        PromptSpend(prompt=prompt, charges=count, last_used_at=last, **_money(c).model_dump())
        for prompt, c, count, last in rows
    ]


def _whole_months(period: Period) -> bool:
    """Whether the period runs from the first of a month to the first of a later one."""
    return _whole_days(period) and period.start.day == 1 and period.end.day == 1


def _top_prompts_of_months(
    db: Session, scope: Scope, period: Period, limit: int
) -> list[PromptSpend]:
    conditions: list[ColumnElement[bool]] = [
        ChargePromptMonth.team_id == scope.team_id,
        ChargePromptMonth.month >= period.first_day,
        ChargePromptMonth.month < period.end.date(),
    ]
    if scope.user_id is not None:
        conditions.append(ChargePromptMonth.user_id == scope.user_id)
    if scope.project_id is not None:
        conditions.append(ChargePromptMonth.project_id == scope.project_id)
    total = func.sum(ChargePromptMonth.credits)
    last = func.max(ChargePromptMonth.last_charged_at)
    rows = db.execute(
        select(ChargePromptMonth.prompt, total, func.sum(ChargePromptMonth.charges), last)
        .where(*conditions)
        .group_by(ChargePromptMonth.prompt_md5, ChargePromptMonth.prompt)
        .order_by(total.desc(), last.desc())
        .limit(limit)
    ).all()
    return [
        PromptSpend(prompt=prompt, charges=int(count), last_used_at=at, **_money(c).model_dump())
        for prompt, c, count, at in rows
    ]


def spend_by_outcome(db: Session, scope: Scope, period: Period) -> list[OutcomeSpend]:
    """Credits per final state of the jobs (running jobs show as pending or submitting)."""
    return _by_outcome(_model_outcome_rows(db, scope, period))


def cost_summary(db: Session, scope: Scope, period: Period) -> CostSummary:
    """The dashboard's figures for one window; per-person figures only for a team scope."""
    model_outcome = _model_outcome_rows(db, scope, period)
    outcomes = _by_outcome(model_outcome)
    lost = sum((o.credits for o in outcomes if o.status in LOST_STATUSES), _ZERO)
    return CostSummary(
        period=period.out(),
        scope=scope.kind,
        user_id=scope.user_id,
        project_id=scope.project_id,
        total=spend_total(db, scope, period),
        by_person=spend_by_person(db, scope, period) if scope.user_id is None else [],
        by_project=spend_by_project(db, scope, period),
        by_model=_by_model(model_outcome),
        by_day=spend_by_day(db, scope, period),
        top_prompts=top_prompts(db, scope, period),
        by_outcome=outcomes,
        lost=_money(lost),
    )


# --- the ledger ------------------------------------------------------------------------------


def _ledger_query(
    scope: Scope, period: Period, model: str | None
) -> Select[Charge, str, str, str, str]:
    return (
        select(Charge, User.name, Job.status, Job.prompt, Project.name)
        .join(User, User.id == Charge.user_id)
        .join(Job, Job.id == Charge.job_id)
        .join(Project, Project.id == Charge.project_id)
        .where(*_charge_filter(scope, period, model))
        .order_by(Charge.created_at, Charge.id)
    )


def _ledger_row(charge: Charge, person: str, status: str, prompt: str, project: str) -> LedgerRow:
    return LedgerRow(
        id=charge.id,
        charged_at=charge.created_at,
        job_id=charge.job_id,
        user_id=charge.user_id,
        person=person,
        project_id=charge.project_id,
        project=project,
        model=charge.model,
        credits=charge.credits,
        usd=charge.usd,
        job_status=status,
        prompt=prompt,
    )


def ledger_page(
    db: Session,
    scope: Scope,
    period: Period,
    model: str | None = None,
    *,
    limit: int = 500,
    offset: int = 0,
) -> tuple[list[LedgerRow], int | None]:
    """One page of ledger rows, oldest first, and the offset of the next page (None: last)."""
    rows = db.execute(_ledger_query(scope, period, model).limit(limit + 1).offset(offset)).all()
    more = len(rows) > limit
    page = [_ledger_row(*row) for row in rows[:limit]]
    return page, (offset + limit if more else None)


def iter_ledger(
    db: Session, scope: Scope, period: Period, model: str | None = None
) -> Iterator[LedgerRow]:
    """Every ledger row of the filter, oldest first, fetched in chunks (for exports)."""
    stmt = _ledger_query(scope, period, model).execution_options(yield_per=1000)
    for row in db.execute(stmt):
        yield _ledger_row(*row)


# --- budgets ---------------------------------------------------------------------------------


def _budget_state(percent: Decimal) -> BudgetState:
    if percent >= 100:
        return "exhausted"
    if percent >= WARNING_SHARE * 100:
        return "warning"
    return "ok"


def _budget_line(
    scope: Literal["team", "person", "project"],
    user_id: uuid.UUID | None,
    name: str,
    monthly: Decimal,
    spent: Decimal,
    held: Decimal,
) -> BudgetLine:
    used = spent + held
    # A zero budget allows nothing: it is used up from the start.
    percent = (used * 100 / monthly).quantize(Decimal("0.1")) if monthly > 0 else Decimal(100)
    return BudgetLine(
        scope=scope,
        user_id=user_id,
        name=name,
        monthly_credits=monthly,
        spent=spent,
        held=held,
        remaining=monthly - used,
        percent_used=percent,
        state=_budget_state(percent),
    )


def _month_usage(
    db: Session, team_id: uuid.UUID, since: datetime, user_id: uuid.UUID | None = None
) -> tuple[dict[uuid.UUID, Decimal], dict[uuid.UUID, Decimal]]:
    """Credits charged and held this month, per person of the team (or of one person)."""
    (first, last), ledger_since = _split_at_today(since)
    spent_q = (
        select(Charge.user_id, func.sum(Charge.credits))
        .where(Charge.team_id == team_id, Charge.created_at >= ledger_since)
        .group_by(Charge.user_id)
    )
    rolled_q = (
        select(ChargeDay.user_id, func.sum(ChargeDay.credits))
        .where(ChargeDay.team_id == team_id, ChargeDay.day >= first, ChargeDay.day < last)
        .group_by(ChargeDay.user_id)
    )
    held_q = (
        select(Reservation.user_id, func.sum(Reservation.credits))
        .where(
            Reservation.team_id == team_id,
            Reservation.state == ReservationState.HELD.value,
            Reservation.created_at >= since,
        )
        .group_by(Reservation.user_id)
    )
    if user_id is not None:
        spent_q = spent_q.where(Charge.user_id == user_id)
        rolled_q = rolled_q.where(ChargeDay.user_id == user_id)
        held_q = held_q.where(Reservation.user_id == user_id)
    spent = _sum_rows(db.execute(rolled_q).all(), db.execute(spent_q).all())
    held = {uid: Decimal(c) for uid, c in db.execute(held_q).all()}
    return spent, held


def _sum_rows(*parts: Sequence[Any]) -> dict[uuid.UUID, Decimal]:
    """(key, credits) rows of several reads, summed per key."""
    totals: dict[uuid.UUID, Decimal] = {}
    for rows in parts:
        for key, credits in rows:
            totals[key] = totals.get(key, _ZERO) + Decimal(credits)
    return totals


def _project_month(
    db: Session, team_id: uuid.UUID, since: datetime
) -> tuple[dict[uuid.UUID, Decimal], dict[uuid.UUID, Decimal]]:
    """Credits charged and credits held since `since`, per project of the team."""
    (first, last), ledger_since = _split_at_today(since)
    rolled = db.execute(
        select(ChargeDay.project_id, func.sum(ChargeDay.credits))
        .where(ChargeDay.team_id == team_id, ChargeDay.day >= first, ChargeDay.day < last)
        .group_by(ChargeDay.project_id)
    ).all()
    today = db.execute(
        select(Charge.project_id, func.sum(Charge.credits))
        .where(Charge.team_id == team_id, Charge.created_at >= ledger_since)
        .group_by(Charge.project_id)
    ).all()
    held = db.execute(
        select(Reservation.project_id, func.sum(Reservation.credits))
        .where(
            Reservation.team_id == team_id,
            Reservation.state == ReservationState.HELD.value,
            Reservation.created_at >= since,
        )
        .group_by(Reservation.project_id)
    ).all()
    return (_sum_rows(rolled, today), {p: Decimal(c) for p, c in held})


def budget_lines(db: Session, team_id: uuid.UUID, now: datetime | None = None) -> list[BudgetLine]:
    """The team's budget first (if any), then each project's, then each person's, with this
    month's use (credits charged and held)."""
    since = month_start(now)
    budgets = db.execute(
        select(Budget, User.name, Project.name)
        .outerjoin(User, User.id == Budget.user_id)
        .outerjoin(Project, Project.id == Budget.project_id)
        .where(Budget.team_id == team_id)
        .order_by(Budget.user_id.is_not(None), Budget.project_id.is_(None), Project.name, User.name)
    ).all()
    if not budgets:
        return []
    spent, held = _month_usage(db, team_id, since)
    project_spent, project_held = _project_month(db, team_id, since)
    lines = []
    for budget, name, project_name in budgets:
        if budget.project_id is not None:
            line = _budget_line(
                "project",
                None,
                project_name or "",
                budget.monthly_credits,
                project_spent.get(budget.project_id, _ZERO),
                project_held.get(budget.project_id, _ZERO),
            )
            lines.append(line.model_copy(update={"project_id": budget.project_id}))
        elif budget.user_id is None:
            lines.append(
                _budget_line(
                    "team",
                    None,
                    "Whole team",
                    budget.monthly_credits,
                    sum(spent.values(), _ZERO),
                    sum(held.values(), _ZERO),
                )
            )
        else:
            lines.append(
                _budget_line(
                    "person",
                    budget.user_id,
                    name or "",
                    budget.monthly_credits,
                    spent.get(budget.user_id, _ZERO),
                    held.get(budget.user_id, _ZERO),
                )
            )
    return lines


def _team_month(db: Session, team_id: uuid.UUID, since: datetime) -> tuple[Decimal, Decimal]:
    """The team's credits charged and held since `since`, read in one snapshot."""
    (first, last), ledger_since = _split_at_today(since)
    rolled = select(_DAY_SUM).where(
        ChargeDay.team_id == team_id, ChargeDay.day >= first, ChargeDay.day < last
    )
    today = select(_SUM).where(Charge.team_id == team_id, Charge.created_at >= ledger_since)
    spent = select(rolled.scalar_subquery() + today.scalar_subquery())
    held = select(func.coalesce(func.sum(Reservation.credits), 0)).where(
        Reservation.team_id == team_id,
        Reservation.state == ReservationState.HELD.value,
        Reservation.created_at >= since,
    )
    row = db.execute(select(spent.scalar_subquery(), held.scalar_subquery())).one()
    return Decimal(row[0] or 0), Decimal(row[1] or 0)


def team_members(db: Session, team_id: uuid.UUID) -> list[User]:
    return list(
        db.scalars(
            select(User)
            .join(Membership, Membership.user_id == User.id)
            .where(Membership.team_id == team_id)
            .order_by(User.name, User.email)
        )
    )


def require_member(db: Session, *, team_id: uuid.UUID, user_id: uuid.UUID) -> User:
    """The person, if they belong to the team; NotFound otherwise (never another team's)."""
    user = db.scalar(
        select(User)
        .join(Membership, Membership.user_id == User.id)
        .where(Membership.team_id == team_id, User.id == user_id)
    )
    if user is None:
        raise NotFound("That person")
    return user


def _upsert_budget(
    db: Session,
    team_id: uuid.UUID,
    user_id: uuid.UUID | None,
    project_id: uuid.UUID | None,
    monthly_credits: Decimal,
    set_by: uuid.UUID | None,
) -> uuid.UUID:
    """Insert or update one budget row; returns its id."""
    # Upsert on the partial unique index, so two managers saving at once cannot collide.
    stmt = insert(Budget).values(
        id=uuid.uuid4(),
        team_id=team_id,
        user_id=user_id,
        project_id=project_id,
        monthly_credits=monthly_credits,
        updated_by_id=set_by,
        created_at=utcnow(),
    )
    if project_id is not None:
        stmt = stmt.on_conflict_do_update(
            index_elements=[Budget.team_id, Budget.project_id],
            index_where=Budget.project_id.is_not(None),
            set_={"monthly_credits": monthly_credits, "updated_by_id": set_by},
        )
    elif user_id is None:
        stmt = stmt.on_conflict_do_update(
            index_elements=[Budget.team_id],
            index_where=Budget.user_id.is_(None) & Budget.project_id.is_(None),
            set_={"monthly_credits": monthly_credits, "updated_by_id": set_by},
        )
    else:
        stmt = stmt.on_conflict_do_update(
            index_elements=[Budget.team_id, Budget.user_id],
            index_where=Budget.user_id.is_not(None),
            set_={"monthly_credits": monthly_credits, "updated_by_id": set_by},
        )
    budget_id = db.scalar(stmt.returning(Budget.id))
    assert budget_id is not None
    return uuid.UUID(str(budget_id))


def set_budget(
    db: Session,
    *,
    team_id: uuid.UUID,
    user_id: uuid.UUID | None,
    monthly_credits: Decimal | None,
    set_by: uuid.UUID | None = None,
    project_id: uuid.UUID | None = None,
) -> Budget | None:
    """Set the team's (both ids None), one member's or one project's monthly budget, in
    credits; None removes it. Raises NotFound for a person or project outside the team."""
    if user_id is not None:
        require_member(db, team_id=team_id, user_id=user_id)
    if project_id is not None:
        get_project(db, team_id=team_id, project_id=project_id)
    before = budget_for(db, team_id=team_id, user_id=user_id, project_id=project_id)
    before_values = None if before is None else {"monthly_credits": before.monthly_credits}
    if monthly_credits is None:
        db.execute(
            delete(Budget).where(Budget.team_id == team_id, *_budget_scope(user_id, project_id))
        )
        db.flush()
        if before is not None:
            _audit_budget(db, team_id, set_by, "budget.remove", before, before_values, None)
        return None
    if monthly_credits < 0:
        raise ValueError("a monthly budget cannot be negative")
    budget_id = _upsert_budget(db, team_id, user_id, project_id, monthly_credits, set_by)
    db.flush()
    budget = db.get(Budget, budget_id, populate_existing=True)
    assert budget is not None
    _audit_budget(
        db,
        team_id,
        set_by,
        "budget.set",
        budget,
        before_values,
        {"monthly_credits": monthly_credits},
    )
    return budget


def _audit_budget(
    db: Session,
    team_id: uuid.UUID,
    set_by: uuid.UUID | None,
    action: str,
    budget: Budget,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
) -> None:
    """One audit entry for a budget change, in the change's transaction."""
    actor = db.get(User, set_by) if set_by is not None else None
    target = (
        f"project:{budget.project_id}"
        if budget.project_id is not None
        else f"person:{budget.user_id}"
        if budget.user_id is not None
        else "team"
    )
    record(
        db,
        team_id=team_id,
        actor_id=set_by,
        actor_email=actor.email if actor is not None else "",
        action=action,
        target_type="budget",
        target_id=target,
        before=before,
        after=after,
    )


def my_spend(
    db: Session, *, team_id: uuid.UUID, user_id: uuid.UUID, now: datetime | None = None
) -> MySpend:
    """A person's own figures, their budget and what is left for them this month."""
    now = now or utcnow()
    since = month_start(now)
    me = Scope(team_id, user_id)
    spent, held = _month_usage(db, team_id, since, user_id)
    my_held = held.get(user_id, _ZERO)
    personal: BudgetLine | None = None
    budget = budget_for(db, team_id=team_id, user_id=user_id)
    if budget is not None:
        personal = _budget_line(
            "person",
            user_id,
            "",
            budget.monthly_credits,
            spent.get(user_id, _ZERO),
            my_held,
        )
    team_line: BudgetLine | None = None
    team_budget = budget_for(db, team_id=team_id, user_id=None)
    if team_budget is not None:
        team_spent, team_held = _team_month(db, team_id, since)
        team_line = _budget_line(
            "team", None, "Whole team", team_budget.monthly_credits, team_spent, team_held
        )
    applicable = [line for line in (personal, team_line) if line is not None]
    binding = min(applicable, key=lambda line: line.remaining, default=None)
    states: list[BudgetState] = ["ok", "warning", "exhausted"]
    state = max((line.state for line in applicable), key=states.index, default="ok")
    return MySpend(
        user_id=user_id,
        this_month=spend_total(db, me, this_month(now)),
        last_30_days=spend_total(db, me, last_days(30, now)),
        held=my_held,
        personal_budget=personal,
        team_budget_remaining=team_line.remaining if team_line is not None else None,
        remaining=binding.remaining if binding is not None else None,
        limited_by=binding.scope if binding is not None else None,
        percent_used=max((line.percent_used for line in applicable), default=None),
        state=state,
    )


# --- the account's credit balance ------------------------------------------------------------


def refresh_credit_balance(db: Session, client: BFLClient) -> CreditBalance:
    """Read the account's balance from BFL (GET /v1/credits) and store it; BFL errors propagate."""
    balance = client.credits()
    now = utcnow()
    reading = CreditBalance(credits=balance, checked_at=now)
    db.add(reading)
    db.execute(
        delete(CreditBalance).where(
            CreditBalance.checked_at < now - timedelta(days=BALANCE_HISTORY_DAYS)
        )
    )
    db.flush()
    return reading


def credit_outlook(db: Session, now: datetime | None = None) -> CreditOutlook:
    """The latest balance and how many days it lasts at the last 7 days' account-wide rate.

    The balance belongs to the whole BFL account, which every team draws on, so the rate
    counts every team's charges; only the total is shown, never another team's share.
    """
    now = now or utcnow()
    latest = db.scalars(
        select(CreditBalance).order_by(CreditBalance.checked_at.desc()).limit(1)
    ).first()
    spent = db.scalar(
        select(func.coalesce(func.sum(Charge.credits), 0)).where(
            Charge.created_at >= now - timedelta(days=RATE_WINDOW_DAYS),
            Charge.created_at < now,
        )
    )
    rate = (Decimal(spent or 0) / RATE_WINDOW_DAYS).quantize(_CENT)
    days_left: Decimal | None = None
    if latest is not None and rate > 0:
        days_left = (max(latest.credits, _ZERO) / rate).quantize(Decimal("0.1"))
    return CreditOutlook(
        balance=latest.credits if latest is not None else None,
        checked_at=latest.checked_at if latest is not None else None,
        daily_rate=rate,
        days_left=days_left,
    )


# --- who asks, and for which window ----------------------------------------------------------


def report_scope(
    db: Session,
    *,
    team_id: uuid.UUID,
    caller_id: uuid.UUID,
    is_manager: bool,
    user_id: uuid.UUID | None = None,
) -> Scope:
    """The figures a caller may see: managers the team or any member, members only their own.

    A person outside the caller's team is NotFound, so ids of other teams reveal nothing.
    """
    if not is_manager:
        if user_id is not None and user_id != caller_id:
            raise Forbidden("Members can see only their own costs; ask a manager for others'.")
        return Scope(team_id, caller_id)
    if user_id is not None:
        require_member(db, team_id=team_id, user_id=user_id)
    return Scope(team_id, user_id)


def report_period(
    period: str | None = None,
    start: date | None = None,
    end: date | None = None,
    now: datetime | None = None,
    *,
    max_days: int | None = None,
) -> Period:
    """`start`/`end` (UTC days, both included) if either is given, else the named period.

    Raises StudioError 422 naming `end` for an end before the start or at the last possible
    day, and naming `start` for a range longer than `max_days` days (when given)."""
    today = (now or utcnow()).astimezone(UTC).date()
    if start is not None or end is not None:
        first = start or month_start(now).date()
        last = end or today
        if last < first:
            raise StudioError(
                422,
                "invalid_request",
                "The end date is before the start date; pick an end on or after the start.",
                [FieldProblem(field="end", message="must be on or after start")],
            )
        if last >= date.max:
            # The period runs to midnight after `last`, which does not exist for the last day.
            raise StudioError(
                422,
                "invalid_request",
                f"The end date must be before {date.max.isoformat()}.",
                [FieldProblem(field="end", message=f"must be before {date.max.isoformat()}")],
            )
        if max_days is not None and (last - first).days + 1 > max_days:
            raise StudioError(
                422,
                "invalid_request",
                f"Pick at most {max_days} days at once; this range has "
                f"{(last - first).days + 1:,} (COST_REVIEW_MAX_DAYS).",
                [FieldProblem(field="start", message=f"at most {max_days} days before end")],
            )
        return date_range(first, last)
    if period in (None, "", "month"):
        return this_month(now)
    if period == "30d":
        return last_days(30, now)
    raise StudioError(
        422,
        "invalid_request",
        "Choose period=month (this month) or period=30d (the last 30 days).",
        [FieldProblem(field="period", message="must be month or 30d")],
    )
