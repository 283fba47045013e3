"""Alert rules and firing: thresholds on (scope_type, scope_id, period), the credit runway and
bursts of failed jobs. Firing inserts under a unique key, so each alert fires once.

A new kind of budget (a project's, a quota) is one more entry in `BUDGET_SOURCES`: a function
that lists its usages; its alerts are rows of the same table with their own `scope_type`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from app.alerts.models import Alert, Notice
from app.auth.models import Membership, Role, Team
from app.costs.service import budget_lines, credit_outlook
from app.db import utcnow
from app.jobs.models import Job, JobStatus
from app.settings import get_settings

_STAFF = (Role.MANAGER.value, Role.ADMIN.value)


@dataclass(frozen=True)
class Usage:
    """How much of one budget a period has used: `limit` and `used` in credits; `watchers`
    are the people told besides the team's managers and admins (a person's own budget)."""

    scope_type: str
    scope_id: str
    label: str
    period: str
    limit: Decimal
    used: Decimal
    watchers: tuple[uuid.UUID, ...] = field(default=())


BudgetSource = Callable[[Session, uuid.UUID, datetime], list[Usage]]


def _monthly_budgets(db: Session, team_id: uuid.UUID, now: datetime) -> list[Usage]:
    """The team's, its people's and its projects' monthly budgets, charged credits only
    (holds may still settle lower or be released)."""
    month = now.astimezone(UTC).strftime("%Y-%m")
    usages = []
    for line in budget_lines(db, team_id, now):
        if line.scope == "project":
            scope_id, label = str(line.project_id), f"project {line.name}'s budget"
        elif line.scope == "person":
            scope_id, label = str(line.user_id), f"{line.name}'s budget"
        else:
            scope_id, label = "", "the team's budget"
        usages.append(
            Usage(
                scope_type=line.scope,
                scope_id=scope_id,
                label=label,
                period=month,
                limit=line.monthly_credits,
                used=line.spent,
                watchers=(line.user_id,) if line.scope == "person" and line.user_id else (),
            )
        )
    return usages


#: Every budget alerts watch, by source; add a source for a new scope (projects, quotas).
BUDGET_SOURCES: dict[str, BudgetSource] = {"monthly": _monthly_budgets}


def team_staff(db: Session, team_id: uuid.UUID) -> list[uuid.UUID]:
    """The team's managers and admins: who is told about every alert of the team."""
    return list(
        db.scalars(
            select(Membership.user_id).where(
                Membership.team_id == team_id, Membership.role.in_(_STAFF)
            )
        )
    )


def fire(
    db: Session,
    *,
    team_id: uuid.UUID,
    kind: str,
    scope_type: str,
    scope_id: str,
    period: str,
    threshold: int,
    title: str,
    body: str,
    details: dict[str, Any],
    recipients: Sequence[uuid.UUID],
    notices: bool = True,
) -> Alert | None:
    """Record one alert and (with `notices`) a notice for each recipient, once: None when
    this (team, kind, scope, period, threshold) fired already, even in a racing transaction."""
    people = list(dict.fromkeys(recipients))
    alert_id = db.scalar(
        insert(Alert)
        .values(
            id=uuid.uuid4(),
            team_id=team_id,
            kind=kind,
            scope_type=scope_type,
            scope_id=scope_id,
            period=period,
            threshold=threshold,
            title=title[:200],
            body=body,
            details={**details, "recipients": [str(p) for p in people]},
            created_at=utcnow(),
        )
        .on_conflict_do_nothing(constraint="uq_alerts_once")
        .returning(Alert.id)
    )
    if alert_id is None:
        return None
    if notices:
        for person in people:
            db.add(
                Notice(team_id=team_id, user_id=person, alert_id=alert_id, title=title, body=body)
            )
    db.flush()
    return db.get(Alert, alert_id)


def _percent(used: Decimal, limit: Decimal) -> Decimal:
    if limit <= 0:
        return Decimal(100) if used > 0 else Decimal(0)
    return used * 100 / limit


def evaluate_budgets(db: Session, team_id: uuid.UUID, now: datetime | None = None) -> list[Alert]:
    """Fire the budget alerts the team's usage crossed (each threshold once a period)."""
    now = now or utcnow()
    thresholds = get_settings().alert_budget_thresholds
    staff = team_staff(db, team_id)
    fired: list[Alert] = []
    for source in BUDGET_SOURCES.values():
        for usage in source(db, team_id, now):
            percent = _percent(usage.used, usage.limit)
            crossed = [t for t in thresholds if percent >= t]
            if not crossed:
                continue
            # Only the highest crossed threshold speaks; lower ones crossed in the same jump
            # are recorded as passed (so they never fire later) but not sent.
            for threshold in crossed:
                highest = threshold == crossed[-1]
                alert = _fire_budget(db, team_id, usage, threshold, percent, staff, highest)
                if alert is None:
                    continue
                if highest:
                    fired.append(alert)
                else:
                    alert.delivered_at = now
    db.flush()
    return fired


def _fire_budget(
    db: Session,
    team_id: uuid.UUID,
    usage: Usage,
    threshold: int,
    percent: Decimal,
    staff: list[uuid.UUID],
    speak: bool,
) -> Alert | None:
    title = (
        f"{usage.label[:1].upper()}{usage.label[1:]} is at {percent:.0f}% ({threshold}% reached)"
    )
    body = (
        f"{usage.used:.2f} of {usage.limit:.2f} credits of {usage.label} are spent in "
        f"{usage.period}."
    )
    return fire(
        db,
        team_id=team_id,
        kind="budget",
        scope_type=usage.scope_type,
        scope_id=usage.scope_id,
        period=usage.period,
        threshold=threshold,
        title=title,
        body=body,
        details={
            "used_credits": str(usage.used),
            "limit_credits": str(usage.limit),
            "percent": f"{percent:.1f}",
        },
        recipients=[*staff, *usage.watchers],
        notices=speak,
    )


def evaluate_runway(db: Session, now: datetime | None = None) -> list[Alert]:
    """When the BFL balance runs out within ALERT_CREDIT_RUNWAY_DAYS at the last 7 days' rate,
    tell every team's managers and admins (once a day)."""
    days = get_settings().ALERT_CREDIT_RUNWAY_DAYS
    now = now or utcnow()
    outlook = credit_outlook(db, now)
    if days <= 0 or outlook.days_left is None or outlook.days_left > days:
        return []
    title = f"BFL credits run out in about {outlook.days_left:.1f} days"
    body = (
        f"The BFL account holds {outlook.balance} credits and spends about "
        f"{outlook.daily_rate:.2f} a day. Top up before it runs out."
    )
    details = {
        "balance_credits": str(outlook.balance),
        "daily_rate_credits": str(outlook.daily_rate),
        "days_left": f"{outlook.days_left:.2f}",
    }
    fired = []
    for team_id in db.scalars(select(Team.id)):
        alert = fire(
            db,
            team_id=team_id,
            kind="credit_runway",
            scope_type="account",
            scope_id="",
            period=now.astimezone(UTC).strftime("%Y-%m-%d"),
            threshold=days,
            title=title,
            body=body,
            details=details,
            recipients=team_staff(db, team_id),
        )
        if alert is not None:
            fired.append(alert)
    return fired


def _window_start(now: datetime, minutes: int) -> datetime:
    epoch_minutes = int(now.timestamp() // 60)
    return datetime.fromtimestamp((epoch_minutes - epoch_minutes % minutes) * 60, tz=UTC)


def evaluate_failures(db: Session, now: datetime | None = None) -> list[Alert]:
    """A team with ALERT_FAILURE_BURST_COUNT failed jobs in the last
    ALERT_FAILURE_BURST_MINUTES gets one alert per window of that length."""
    settings = get_settings()
    count, minutes = settings.ALERT_FAILURE_BURST_COUNT, settings.ALERT_FAILURE_BURST_MINUTES
    if count <= 0:
        return []
    now = now or utcnow()
    failed = func.count(Job.id)
    rows = db.execute(
        select(Job.team_id, failed)
        .where(
            Job.status == JobStatus.FAILED.value,
            Job.finished_at >= now - timedelta(minutes=minutes),
        )
        .group_by(Job.team_id)
        .having(failed >= count)
    ).all()
    window = _window_start(now, minutes).strftime("%Y-%m-%dT%H:%M")
    fired = []
    for team_id, failures in rows:
        alert = fire(
            db,
            team_id=team_id,
            kind="job_failures",
            scope_type="team",
            scope_id="",
            period=window,
            threshold=count,
            title=f"{failures} jobs failed in the last {minutes} minutes",
            body="Many jobs are failing at once; see the Ops page and the failed jobs' reasons.",
            details={"failures": failures, "minutes": minutes},
            recipients=team_staff(db, team_id),
        )
        if alert is not None:
            fired.append(alert)
    return fired


def evaluate_all(db: Session, now: datetime | None = None) -> list[Alert]:
    """Every rule for every team; returns the alerts that fired now (to deliver after commit)."""
    now = now or utcnow()
    fired: list[Alert] = []
    for team_id in db.scalars(select(Team.id)).all():
        fired += evaluate_budgets(db, team_id, now)
    fired += evaluate_runway(db, now)
    fired += evaluate_failures(db, now)
    return fired
