"""Where each queued job of a team stands: its position, when it should start and why it waits.

The positions replay the dispatcher's rule (app/jobs/dispatch.py, docs/architecture.md "Queue
order") over every queued job of the account, since all teams share BFL's cap: a manager's
"front" first, then round-robin between people by fewest jobs at BFL, then place in line.
Only the asking team's jobs are listed; other teams' jobs count in positions, nothing more.
"""

from __future__ import annotations

import heapq
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.auth.models import User
from app.bfl.catalogue import UnknownModel, get_model
from app.jobs import account
from app.jobs.models import ACTIVE_STATUSES, Job, JobStatus, TeamQueuePause
from app.settings import Settings

#: Seconds a job is assumed to spend at BFL before any job of the studio has finished.
DEFAULT_LATENCY_S = 20.0
#: How many recent finished jobs the observed latency is averaged over.
LATENCY_SAMPLE = 50

#: Why a queued job waits, for people; the codes are the API's `reason`.
REASONS = {
    "paused": "Paused by its owner or a manager; it is not sent until resumed.",
    "team_paused": "A manager paused the team's queue; jobs at BFL finish, nothing new is sent.",
    "bfl_outage": "BFL is not answering; nothing is sent or charged until it does.",
    "rate_limited": "BFL's rate limit is reached; sending resumes when a task ends.",
    "retry_later": "BFL refused it for now; it is tried again shortly.",
    "model_cap": "This model's own limit of tasks at BFL is reached.",
    "account_cap": "Every slot of the BFL account's cap is in use; it goes when one frees.",
    "fair_share": "Other people's jobs go first: people take turns.",
    "starting": "A slot is free; it is being sent now.",
}


@dataclass(frozen=True)
class QueueEntry:
    """One queued job: `position` (1 = next; None while it or its team is paused), how many
    other people's jobs are ahead, the estimated start (UTC; None when unknown) and the
    reason it waits (a `REASONS` key)."""

    job: Job
    owner_name: str
    position: int | None
    others_ahead: int
    estimated_start: datetime | None
    reason: str

    @property
    def reason_text(self) -> str:
        return REASONS[self.reason]


@dataclass(frozen=True)
class QueueView:
    """The team's queue: its entries in order, the team pause, the account's cap and load,
    and the observed seconds a job spends at BFL."""

    entries: list[QueueEntry]
    paused_at: datetime | None
    paused_by: str | None
    cap: int
    active: int
    latency_s: float


@dataclass(frozen=True)
class _Row:
    id: uuid.UUID
    team_id: uuid.UUID
    user_id: uuid.UUID
    front: bool
    place: datetime
    batch_index: int

    def key(self, active: int) -> tuple[object, ...]:
        front_place = self.place.timestamp() if self.front else 0.0
        return (not self.front, front_place, active, self.place, self.batch_index, self.id)


def observed_latency(db: Session) -> float:
    """Mean seconds from POST to finish of the last LATENCY_SAMPLE ready jobs (a default
    before any finished)."""
    recent = (
        select((func.extract("epoch", Job.finished_at - Job.submitted_at)).label("s"))
        .where(Job.status == JobStatus.READY, Job.submitted_at.is_not(None))
        .order_by(Job.finished_at.desc())
        .limit(LATENCY_SAMPLE)
        .subquery()
    )
    mean = db.scalar(select(func.avg(recent.c.s)))
    return float(mean) if mean is not None and mean > 0 else DEFAULT_LATENCY_S


def _order(db: Session) -> tuple[list[_Row], dict[uuid.UUID, int]]:
    """Every claimable queued job of the account in the order the dispatcher would take them
    (each claim counted as one more job at BFL for its owner), and the active count per user."""
    active = dict(
        db.execute(
            select(Job.user_id, func.count())
            .where(Job.status.in_(ACTIVE_STATUSES))
            .group_by(Job.user_id)
        ).all()
    )
    paused_teams = select(TeamQueuePause.team_id)
    rows = db.execute(
        select(
            Job.id,
            Job.team_id,
            Job.user_id,
            Job.queue_front,
            func.coalesce(Job.queue_key, Job.created_at),
            Job.batch_index,
        ).where(
            Job.status == JobStatus.QUEUED,
            Job.paused_at.is_(None),
            Job.team_id.not_in(paused_teams),
        )
    ).all()
    lines: dict[uuid.UUID, list[_Row]] = {}
    for r in rows:
        lines.setdefault(r[2], []).append(_Row(*r))
    for line in lines.values():
        line.sort(key=lambda row: (not row.front, row.place, row.batch_index, row.id))
        line.reverse()  # pop() from the end takes the head
    load = dict(active)
    heap = [(line[-1].key(load.get(user, 0)), user) for user, line in lines.items()]
    heapq.heapify(heap)
    order: list[_Row] = []
    while heap:
        _, user = heapq.heappop(heap)
        order.append(lines[user].pop())
        load[user] = load.get(user, 0) + 1
        if lines[user]:
            heapq.heappush(heap, (lines[user][-1].key(load[user]), user))
    return order, active


def _blocked_models(db: Session, cap: int) -> set[str]:
    rows = db.execute(
        select(Job.model, func.count()).where(Job.status.in_(ACTIVE_STATUSES)).group_by(Job.model)
    ).all()
    blocked = set()
    for model, n in rows:
        try:
            own = get_model(model).active_task_cap
        except UnknownModel:
            own = None
        if n >= min(cap, own if own is not None else cap):
            blocked.add(model)
    return blocked


@dataclass(frozen=True)
class _Facts:
    now: datetime
    cap: int
    free: int
    latency: float
    closed_until: datetime | None
    outage: bool
    rate_limited: bool
    team_paused: bool
    blocked: set[str]


def _reason(job: Job, position: int | None, others: int, facts: _Facts) -> str:
    if job.paused_at is not None:
        return "paused"
    if facts.team_paused:
        return "team_paused"
    if facts.outage:
        return "bfl_outage"
    if facts.rate_limited:
        return "rate_limited"
    if job.not_before is not None and job.not_before > facts.now:
        return "retry_later"
    if job.model in facts.blocked:
        return "model_cap"
    if position is not None and position <= facts.free:
        return "starting"
    return "fair_share" if others else "account_cap"


def _estimate(job: Job, position: int | None, facts: _Facts) -> datetime | None:
    if position is None or facts.outage:
        return None
    start = facts.now
    if facts.closed_until is not None and facts.closed_until > start:
        start = facts.closed_until
    if job.not_before is not None and job.not_before > start:
        start = job.not_before
    if position > facts.free:
        waves = math.ceil((position - facts.free) / max(facts.cap, 1))
        start += timedelta(seconds=waves * facts.latency)
    return start


def _facts(db: Session, settings: Settings, team_id: uuid.UUID, now: datetime) -> _Facts:
    seen = account.peek(db)
    cap = account.effective_cap(seen, settings, now)
    active_total = db.scalar(select(func.count()).where(Job.status.in_(ACTIVE_STATUSES))) or 0
    outage = seen is not None and seen.outage_since is not None
    limited = (
        seen is not None and seen.rate_limited_until is not None and seen.rate_limited_until > now
    )
    return _Facts(
        now=now,
        cap=cap,
        free=max(cap - active_total, 0),
        latency=observed_latency(db),
        closed_until=seen.rate_limited_until if limited and seen is not None else None,
        outage=outage,
        rate_limited=limited,
        team_paused=db.get(TeamQueuePause, team_id) is not None,
        blocked=_blocked_models(db, cap),
    )


def team_queue(
    db: Session,
    settings: Settings,
    *,
    team_id: uuid.UUID,
    now: datetime,
    only: Sequence[uuid.UUID] | None = None,
) -> QueueView:
    """Every queued job of `team_id` (or just those of `only`, for cards) in the order it will
    be sent (paused ones last), each with its position, estimated start and reason (see
    `QueueEntry`)."""
    facts = _facts(db, settings, team_id, now)
    order, _ = _order(db)
    positions: dict[uuid.UUID, tuple[int, int]] = {}
    others_by_user: dict[uuid.UUID, int] = {}
    for index, row in enumerate(order, start=1):
        ahead_of_others = index - 1 - others_by_user.get(row.user_id, 0)
        positions[row.id] = (index, ahead_of_others)
        others_by_user[row.user_id] = others_by_user.get(row.user_id, 0) + 1
    jobs = db.execute(
        select(Job, User.name)
        .join(User, User.id == Job.user_id)
        .where(
            Job.team_id == team_id,
            Job.status == JobStatus.QUEUED,
            Job.deleted_at.is_(None),
            *([Job.id.in_(list(only))] if only is not None else []),
        )
    ).all()
    entries = []
    for job, name in jobs:
        position, others = positions.get(job.id, (None, 0))
        entries.append(
            QueueEntry(
                job=job,
                owner_name=name,
                position=position,
                others_ahead=others,
                estimated_start=_estimate(job, position, facts),
                reason=_reason(job, position, others, facts),
            )
        )
    entries.sort(key=lambda e: (e.position is None, e.position or 0, e.job.created_at))
    pause = db.get(TeamQueuePause, team_id)
    by = db.get(User, pause.paused_by_id) if pause and pause.paused_by_id else None
    return QueueView(
        entries=entries,
        paused_at=pause.paused_at if pause else None,
        paused_by=by.name if by else None,
        cap=facts.cap,
        active=facts.cap - facts.free,
        latency_s=facts.latency,
    )


def entry_for(db: Session, settings: Settings, job: Job, now: datetime) -> QueueEntry | None:
    """The queue entry of one queued job (for its card), or None once it left the queue."""
    if job.status != JobStatus.QUEUED:
        return None
    view = team_queue(db, settings, team_id=job.team_id, now=now, only=[job.id])
    return next((e for e in view.entries if e.job.id == job.id), None)
