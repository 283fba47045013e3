"""What the ops page and /metrics report: queue, active tasks, workers, failures and latencies.

The BFL account, its active-task cap and its credit balance are shared by the whole studio, so
account-level figures (counts, latencies, failures by code, the balance) are studio-wide. Anything
that identifies a job's content or its author is shown only for the viewer's own team: another
team's waiting job appears as its age, state and model, never its prompt or person.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from app.auth.models import User
from app.costs.models import Charge, CreditBalance
from app.db import get_sessionmaker, utcnow
from app.jobs import account
from app.jobs.models import ACTIVE_STATUSES, Job, JobStatus
from app.ops import heartbeat
from app.settings import get_settings

#: The window for failures, throughput and latency percentiles on the ops page.
RECENT = timedelta(hours=1)
WAITING_ROWS = 10


@dataclass(frozen=True)
class ScrapeFigures:
    """Figures /metrics reads from Postgres (and Redis) at scrape time."""

    jobs_by_status_model: dict[tuple[str, str], int]
    queued: int
    oldest_queued_age_s: float
    active: int
    cap: int
    credits_by_model: dict[str, Decimal]
    credit_balance: Decimal | None
    workers_alive: int | None
    #: The BFL account as the workers found it (app/jobs/account.py).
    bfl_outage: bool = False
    bfl_rate_limited: bool = False
    effective_cap: int = 0


def _status_counts(db: Session) -> dict[tuple[str, str], int]:
    rows = db.execute(select(Job.status, Job.model, func.count()).group_by(Job.status, Job.model))
    return {(status, model): int(count) for status, model, count in rows}


def _oldest_queued_age(db: Session, now: datetime) -> float:
    oldest = db.scalar(select(func.min(Job.created_at)).where(Job.status == JobStatus.QUEUED))
    return max(0.0, (now - oldest).total_seconds()) if oldest is not None else 0.0


def latest_credit_balance(db: Session) -> CreditBalance | None:
    return db.scalars(
        select(CreditBalance).order_by(CreditBalance.checked_at.desc()).limit(1)
    ).first()


def _workers_alive() -> list[heartbeat.ProcessBeat] | None:
    """Live workers, or None when Redis cannot say (it is down: the figure is unknown)."""
    try:
        return heartbeat.alive("worker")
    except Exception:
        return None


def scrape_figures() -> ScrapeFigures:
    """One read-only pass over Postgres for /metrics."""
    now = utcnow()
    with get_sessionmaker()() as db:
        counts = _status_counts(db)
        oldest = _oldest_queued_age(db, now)
        credits = {
            model: Decimal(total)
            for model, total in db.execute(
                select(Charge.model, func.sum(Charge.credits)).group_by(Charge.model)
            )
        }
        balance = latest_credit_balance(db)
        bfl_account = account.status(db, get_settings(), now)
    workers = _workers_alive()
    return ScrapeFigures(
        jobs_by_status_model=counts,
        queued=sum(n for (s, _), n in counts.items() if s == JobStatus.QUEUED),
        oldest_queued_age_s=oldest,
        active=sum(n for (s, _), n in counts.items() if s in ACTIVE_STATUSES),
        cap=get_settings().BFL_MAX_ACTIVE_TASKS,
        credits_by_model=credits,
        credit_balance=balance.credits if balance is not None else None,
        workers_alive=len(workers) if workers is not None else None,
        bfl_outage=bfl_account.kind == "outage",
        bfl_rate_limited=bfl_account.kind == "rate_limited",
        effective_cap=bfl_account.cap,
    )


# --- the ops page -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Percentiles:
    """p50/p95 of a duration over the recent window, in seconds; None when nothing was timed."""

    p50: float | None
    p95: float | None
    samples: int


@dataclass(frozen=True)
class WaitingJob:
    """A job that has waited long. Prompt and person are filled only for the viewer's team."""

    id: uuid.UUID | None
    status: str
    model: str
    age_s: float
    requeues: int
    own_team: bool
    person: str | None = None
    prompt: str | None = None


@dataclass(frozen=True)
class OpsSnapshot:
    now: datetime
    queued: int
    active: int
    cap: int
    by_status: dict[str, int]
    workers: list[heartbeat.ProcessBeat] | None
    beats: list[heartbeat.ProcessBeat] | None
    waiting_longest: list[WaitingJob]
    running_longest: list[WaitingJob]
    failures_by_code: list[tuple[str, int]]
    finished_recent: dict[str, int]
    bfl_latency: Percentiles
    ready_to_stored: Percentiles
    queue_wait: Percentiles
    credit_balance: Decimal | None
    credit_checked_at: datetime | None
    bfl_emulated: bool
    notes: list[str] = field(default_factory=list)

    @property
    def worker_processes(self) -> int:
        return sum(w.concurrency for w in self.workers or [])

    @property
    def cap_used_pct(self) -> int:
        return round(100 * self.active / self.cap) if self.cap else 0


def _percentiles(
    db: Session,
    start: InstrumentedAttribute[datetime | None] | InstrumentedAttribute[datetime],
    end: InstrumentedAttribute[datetime | None],
    since: datetime,
    status: str | None = None,
) -> Percentiles:
    seconds = func.extract("epoch", end - start)
    stmt = select(
        func.percentile_cont(0.5).within_group(seconds),
        func.percentile_cont(0.95).within_group(seconds),
        func.count(),
    ).where(end >= since, start.is_not(None))
    if status is not None:
        stmt = stmt.where(Job.status == status)
    p50, p95, samples = db.execute(stmt).one()
    return Percentiles(
        p50=float(p50) if p50 is not None else None,
        p95=float(p95) if p95 is not None else None,
        samples=int(samples),
    )


def _longest(
    db: Session, statuses: list[JobStatus], team_id: uuid.UUID, now: datetime, *, at_bfl: bool
) -> list[WaitingJob]:
    """The oldest jobs in `statuses`: by queueing time, or by submission time when at BFL."""
    since_col = func.coalesce(Job.submitted_at, Job.created_at) if at_bfl else Job.created_at
    rows = db.execute(
        select(Job, User.name)
        .join(User, User.id == Job.user_id)
        .where(Job.status.in_(statuses))
        .order_by(since_col.asc())
        .limit(WAITING_ROWS)
    )
    found: list[WaitingJob] = []
    for job, person in rows:
        since = (job.submitted_at or job.created_at) if at_bfl else job.created_at
        own = job.team_id == team_id
        found.append(
            WaitingJob(
                id=job.id if own else None,
                status=job.status,
                model=job.model,
                age_s=max(0.0, (now - since).total_seconds()),
                requeues=job.requeues,
                own_team=own,
                person=person if own else None,
                prompt=job.prompt[:120] if own else None,
            )
        )
    return found


def ops_snapshot(db: Session, team_id: uuid.UUID) -> OpsSnapshot:
    """Everything the ops page shows, for an admin of `team_id`."""
    settings = get_settings()
    now = utcnow()
    since = now - RECENT
    by_status: dict[str, int] = {}
    for (status, _model), count in _status_counts(db).items():
        by_status[status] = by_status.get(status, 0) + count
    failures = db.execute(
        select(Job.error_code, func.count())
        .where(
            Job.status.in_([JobStatus.FAILED, JobStatus.MODERATED]),
            Job.finished_at >= since,
        )
        .group_by(Job.error_code)
        .order_by(func.count().desc(), Job.error_code)
    )
    finished = db.execute(
        select(Job.status, func.count()).where(Job.finished_at >= since).group_by(Job.status)
    )
    balance = latest_credit_balance(db)
    notes: list[str] = []
    workers = _workers_alive()
    try:
        beats: list[heartbeat.ProcessBeat] | None = heartbeat.alive("beat")
    except Exception:
        beats = None
    if workers is None:
        notes.append("Redis does not answer: worker heartbeats are unknown.")
    # The BFL account's state (outage, rate limit, learned cap) is the whole studio's.
    bfl_account = account.status(db, settings, now)
    if bfl_account.kind != "ok" or bfl_account.cap < bfl_account.configured_cap:
        notes.append(bfl_account.message)
    return OpsSnapshot(
        now=now,
        queued=by_status.get(JobStatus.QUEUED, 0),
        active=sum(by_status.get(s, 0) for s in ACTIVE_STATUSES),
        cap=bfl_account.cap,
        by_status=by_status,
        workers=workers,
        beats=beats,
        waiting_longest=_longest(db, [JobStatus.QUEUED], team_id, now, at_bfl=False),
        running_longest=_longest(
            db, [s for s in JobStatus if s in ACTIVE_STATUSES], team_id, now, at_bfl=True
        ),
        failures_by_code=[(code or "unknown", int(n)) for code, n in failures],
        finished_recent={str(s): int(n) for s, n in finished},
        bfl_latency=_percentiles(db, Job.submitted_at, Job.bfl_ready_at, since),
        ready_to_stored=_percentiles(db, Job.bfl_ready_at, Job.finished_at, since, JobStatus.READY),
        queue_wait=_percentiles(db, Job.created_at, Job.submitted_at, since),
        credit_balance=balance.credits if balance is not None else None,
        credit_checked_at=balance.checked_at if balance is not None else None,
        bfl_emulated=settings.bfl_emulated,
        notes=notes,
    )
