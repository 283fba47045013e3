"""Cost review over any date range: the range before it for comparison, daily trends per
project and per model, and burn-rate forecasts per team (or person) and per project.

Everything is read from the daily rollup (`charge_days`), so a review of a busy month sums a
few hundred rows, not every charge. Days are UTC days; money is credits (`Decimal`).
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from app.costs.models import Budget
from app.costs.schemas import CostReview, DayPoint, Forecast, Money, Trend
from app.costs.service import (
    Period,
    Scope,
    credits_to_usd,
    date_range,
    month_start,
    this_month,
)
from app.db import utcnow
from app.errors import FieldProblem, StudioError
from app.projects.models import ChargeDay, Project
from app.settings import get_settings

_ZERO = Decimal(0)
_CENT = Decimal("0.01")


def _refuse(field: str, message: str) -> StudioError:
    return StudioError(
        422, "invalid_request", message, [FieldProblem(field=field, message=message)]
    )


def review_period(first: date | None, last: date | None, now: datetime | None = None) -> Period:
    """The UTC days `first`..`last` (both included; defaults: the 1st of this month, today).

    Raises StudioError 422 naming `to` when it is before `from`, and `from` when the range is
    longer than COST_REVIEW_MAX_DAYS.
    """
    today = (now or utcnow()).date()
    first = first or month_start(now).date()
    last = last or today
    if last < first:
        raise _refuse("to", "to must be on or after from; pick an end date on or after the start")
    if last >= date.max - timedelta(days=1):
        raise _refuse("to", f"to must be before {date.max.isoformat()}")
    limit = get_settings().COST_REVIEW_MAX_DAYS
    if (last - first).days + 1 > limit:
        raise _refuse(
            "from",
            f"the range covers {(last - first).days + 1} days; review at most {limit} days "
            "at once (COST_REVIEW_MAX_DAYS)",
        )
    if first <= date.min + timedelta(days=limit):
        raise _refuse("from", "from is too far in the past; pick a later start date")
    return date_range(first, last)


def previous_period(period: Period) -> Period:
    """The range of the same length that ends where `period` starts."""
    length = period.end - period.start
    days = length.days
    previous = Period(f"The {days} days before", period.start - length, period.start)
    return previous


def _where(scope: Scope, first: date, last: date) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = [
        ChargeDay.team_id == scope.team_id,
        ChargeDay.day >= first,
        ChargeDay.day <= last,
    ]
    if scope.user_id is not None:
        conditions.append(ChargeDay.user_id == scope.user_id)
    if scope.project_id is not None:
        conditions.append(ChargeDay.project_id == scope.project_id)
    return conditions


def _daily(db: Session, scope: Scope, period: Period, key: Any) -> dict[str, dict[date, Decimal]]:
    """{key: {day: credits}} of the range, keys as text (project id or model name)."""
    rows = db.execute(
        select(ChargeDay.day, key, func.sum(ChargeDay.credits))
        .where(*_where(scope, period.first_day, period.last_day))
        .group_by(ChargeDay.day, key)
    ).all()
    out: dict[str, dict[date, Decimal]] = defaultdict(dict)
    for day, name, credits in rows:
        out[str(name)][day] = Decimal(credits)
    return out


def _totals(db: Session, scope: Scope, period: Period, key: Any) -> dict[str, Decimal]:
    rows = db.execute(
        select(key, func.sum(ChargeDay.credits))
        .where(*_where(scope, period.first_day, period.last_day))
        .group_by(key)
    ).all()
    return {str(name): Decimal(credits) for name, credits in rows}


def _money(credits: Decimal) -> Money:
    return Money(credits=credits, usd=credits_to_usd(credits))


def _change(now: Decimal, before: Decimal) -> Decimal | None:
    return ((now - before) * 100 / before).quantize(Decimal("0.1")) if before else None


def _trends(
    daily: dict[str, dict[date, Decimal]],
    previous: dict[str, Decimal],
    names: dict[str, str],
    period: Period,
) -> list[Trend]:
    days = [period.first_day + timedelta(days=i) for i in range((period.end - period.start).days)]
    trends = []
    for key in set(daily) | set(previous):
        series = daily.get(key, {})
        credits = sum(series.values(), _ZERO)
        before = previous.get(key, _ZERO)
        trends.append(
            Trend(
                key=key,
                name=names.get(key, key),
                credits=credits,
                previous_credits=before,
                change_percent=_change(credits, before),
                daily=[DayPoint(day=d, credits=series.get(d, _ZERO)) for d in days],
            )
        )
    return sorted(trends, key=lambda t: (-t.credits, t.name))


def _project_names(db: Session, team_id: uuid.UUID) -> dict[str, str]:
    rows = db.execute(select(Project.id, Project.name).where(Project.team_id == team_id)).all()
    return {str(project_id): name for project_id, name in rows}


def cost_review(
    db: Session, scope: Scope, period: Period, now: datetime | None = None
) -> CostReview:
    """The review of `period` for `scope`, compared with the range of the same length before."""
    now = now or utcnow()
    previous = previous_period(period)
    names = _project_names(db, scope.team_id)
    projects = _trends(
        _daily(db, scope, period, ChargeDay.project_id),
        _totals(db, scope, previous, ChargeDay.project_id),
        names,
        period,
    )
    models = _trends(
        _daily(db, scope, period, ChargeDay.model),
        _totals(db, scope, previous, ChargeDay.model),
        {},
        period,
    )
    total = sum((t.credits for t in projects), _ZERO)
    previous_total = sum((t.previous_credits for t in projects), _ZERO)
    return CostReview(
        period=period.out(),
        previous_period=previous.out(),
        scope=scope.kind,
        user_id=scope.user_id,
        project_id=scope.project_id,
        total=_money(total),
        previous_total=_money(previous_total),
        change_percent=_change(total, previous_total),
        by_project=projects,
        by_model=models,
        forecasts=forecasts(db, scope, period, projects, names, now),
    )


def _budgets(db: Session, scope: Scope) -> tuple[Decimal | None, dict[str, Decimal]]:
    """(the scope's own monthly budget: the team's or the person's, {project id: budget})."""
    rows = db.execute(
        select(Budget.user_id, Budget.project_id, Budget.monthly_credits).where(
            Budget.team_id == scope.team_id
        )
    ).all()
    own: Decimal | None = None
    by_project: dict[str, Decimal] = {}
    for user_id, project_id, monthly in rows:
        if project_id is not None:
            by_project[str(project_id)] = monthly
        elif user_id == scope.user_id:
            own = monthly
    return own, by_project


def _forecast(
    scope: Literal["team", "person", "project"],
    project_id: uuid.UUID | None,
    name: str,
    spent_in_range: Decimal,
    days: int,
    month_to_date: Decimal,
    days_left: int,
    budget: Decimal | None,
) -> Forecast:
    rate = (spent_in_range / days).quantize(_CENT)
    runs_out: Decimal | None = None
    if budget is not None and rate > 0:
        runs_out = max(_ZERO, ((budget - month_to_date) / rate).quantize(Decimal("0.1")))
    return Forecast(
        scope=scope,
        project_id=project_id,
        name=name,
        daily_rate=rate,
        month_to_date=month_to_date,
        projected_month_end=(month_to_date + rate * days_left).quantize(_CENT),
        monthly_budget=budget,
        days_until_budget_runs_out=runs_out,
    )


def forecasts(
    db: Session,
    scope: Scope,
    period: Period,
    projects: list[Trend],
    names: dict[str, str],
    now: datetime,
) -> list[Forecast]:
    """Burn rate (credits/day over the range's days up to today) and month-end projection for
    the scope as a whole, then for each project that spent in the range or has a budget."""
    today = now.date()
    month = this_month(now)
    days = max(1, (min(period.last_day, today) - period.first_day).days + 1)
    days_left = (month.last_day - today).days + 1
    month_so_far = _totals(db, scope, Period("", month.start, month.end), ChargeDay.project_id)
    own_budget, project_budgets = _budgets(db, scope)
    in_range = {t.key: t.credits for t in projects}
    whole = "Whole team" if scope.user_id is None else "You"
    result = [
        _forecast(
            scope.kind,
            None,
            whole,
            sum(in_range.values(), _ZERO),
            days,
            sum(month_so_far.values(), _ZERO),
            days_left,
            own_budget if scope.project_id is None else None,
        )
    ]
    keys = set(in_range) | (set(project_budgets) if scope.user_id is None else set())
    if scope.project_id is not None:
        keys &= {str(scope.project_id)}
    for key in sorted(keys, key=lambda k: str(names.get(k, k)).lower()):
        result.append(
            _forecast(
                "project",
                uuid.UUID(key),
                names.get(key, key),
                in_range.get(key, _ZERO),
                days,
                month_so_far.get(key, _ZERO),
                days_left,
                project_budgets.get(key) if scope.user_id is None else None,
            )
        )
    return result
