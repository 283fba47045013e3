"""The sweeper: recovers what crashes, outages and a lost Redis leave behind, from PostgreSQL."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import redis
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.db import session_scope, utcnow
from app.jobs import account, answers, messages, state
from app.jobs.models import BFLAccountState, Job, JobStatus, holds_slot
from app.jobs.outcomes import (
    credits_text,
    deadline_message,
    fail_timed_out,
    human_message,
)
from app.jobs.submission import apply_answer
from app.settings import Settings, get_settings

log = logging.getLogger(__name__)

#: How late a scheduled poll may be before the sweeper sends it again.
OVERDUE_GRACE_S = 2.0


@dataclass
class SweepReport:
    """What one sweep did."""

    dispatch_wakeups: int = 0
    polls_restarted: int = 0
    #: Stale submissions ended `submission_unknown` (no answer from BFL was ever kept).
    submissions_reconciled: int = 0
    #: Submissions moved to pending from BFL's answer kept in Redis.
    answers_applied: int = 0
    timed_out: int = 0
    queue_expired: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "dispatch_wakeups": self.dispatch_wakeups,
            "polls_restarted": self.polls_restarted,
            "submissions_reconciled": self.submissions_reconciled,
            "answers_applied": self.answers_applied,
            "timed_out": self.timed_out,
            "queue_expired": self.queue_expired,
        }


def sweep(now: datetime | None = None, *, batch: int = 500) -> SweepReport:
    """Recover what crashes and a lost Redis leave behind; Postgres alone says what is due.

    - `submitting` with BFL's answer kept in Redis (the worker died, or PostgreSQL was down,
      before PostgreSQL took it): moved to pending with that answer and charged once;
    - `submitting` for longer than SUBMITTING_STALE_S with no answer kept: the POST may have
      reached BFL, so the job ends `submission_unknown` and is never re-POSTed;
    - `pending` longer than JOB_MAX_PENDING_S: ends `timed_out`;
    - `pending` with an overdue `next_poll_at` (message lost, worker killed): polled again;
    - `queued` longer than QUEUE_DEADLINE_S: ends `queue_deadline` (never sent, not charged);
    - the account's probe due during an outage, or its rate-limit pause to re-check: one
      dispatcher is woken; otherwise eligible `queued` jobs and free slots wake dispatchers.
    Safe to run anywhere, any number of times: every action is a guarded transition or a
    wake-up that does nothing when not needed.
    """
    settings = get_settings()
    now = now or utcnow()
    report = SweepReport()
    applied: list[uuid.UUID] = []
    with session_scope() as db:
        _reconcile_submitting(db, settings, now, batch, report, applied)
        _end_timed_out(db, settings, now, batch, report)
        _restart_overdue_polls(db, now, batch, report)
        # The account as it was before this sweep ended anything: what the wake-ups go by.
        seen = account.peek(db)
        _expire_queued(db, settings, now, batch, report)
        _wake_dispatchers(db, settings, now, seen, report)
    _forget_applied(applied)
    return _logged(report)


def _end_timed_out(
    db: Session, settings: Settings, now: datetime, batch: int, report: SweepReport
) -> None:
    """`pending` longer than JOB_MAX_PENDING_S ends `timed_out`."""
    expired = db.scalars(
        select(Job.id)
        .where(
            Job.status == JobStatus.PENDING,
            Job.submitted_at < now - timedelta(seconds=settings.JOB_MAX_PENDING_S),
        )
        .limit(batch)
    ).all()
    for job_id in expired:
        if fail_timed_out(db, job_id, settings):
            report.timed_out += 1


def restart_overdue_polls(now: datetime | None = None, *, batch: int = 500) -> int:
    """Send a poll for every `pending` job whose poll is overdue; how many were sent.

    With webhooks on, no poll message is sent per job: a job's `next_poll_at` is the fallback
    time for a webhook that never comes (POLL_MAX_INTERVAL_S after BFL's answer), and beat
    runs this every POLL_MAX_INTERVAL_S, one query for every job instead of a message per
    job that, almost always, would find the job finished by its webhook.
    """
    report = SweepReport()
    with session_scope() as db:
        _restart_overdue_polls(db, now or utcnow(), batch, report)
    return report.polls_restarted


def _restart_overdue_polls(db: Session, now: datetime, batch: int, report: SweepReport) -> None:
    """`pending` with an overdue (or no) `next_poll_at` gets a poll message again."""
    overdue = db.scalars(
        select(Job.id)
        .where(
            Job.status == JobStatus.PENDING,
            (Job.next_poll_at.is_(None))
            | (Job.next_poll_at < now - timedelta(seconds=OVERDUE_GRACE_S)),
        )
        .order_by(Job.next_poll_at.nulls_first())
        .limit(batch)
    ).all()
    for job_id in overdue:
        messages.schedule_poll(db, job_id, None)
    report.polls_restarted = len(overdue)


def _expire_queued(
    db: Session, settings: Settings, now: datetime, batch: int, report: SweepReport
) -> None:
    """`queued` longer than QUEUE_DEADLINE_S ends `queue_deadline`, saying why it waited."""
    too_old = db.scalars(
        select(Job.id)
        .where(
            Job.status == JobStatus.QUEUED,
            Job.created_at < now - timedelta(seconds=settings.QUEUE_DEADLINE_S),
        )
        .limit(batch)
    ).all()
    if not too_old:
        return
    status = account.status(db, settings, now)
    reason = {
        "outage": "BFL was unreachable",
        "rate_limited": "BFL's active-task limit was reached",
    }.get(status.kind, "the queue was long")
    for job_id in too_old:
        if state.finish_unsuccessfully(
            db,
            job_id,
            expected=JobStatus.QUEUED,
            target=JobStatus.FAILED,
            error_code="queue_deadline",
            error_message=deadline_message(settings, reason),
            now=now,
        ):
            report.queue_expired += 1


def _forget_applied(applied: list[uuid.UUID]) -> None:
    """Drop the kept answers PostgreSQL now holds (after the commit), and prune the journal."""
    for job_id in applied:
        answers.forget(job_id)
    if answers.journal_path().exists():
        with session_scope() as db:
            outstanding = db.scalars(select(Job.id).where(Job.status == JobStatus.SUBMITTING)).all()
        answers.prune_journal(outstanding)


def _wake_dispatchers(
    db: Session,
    settings: Settings,
    now: datetime,
    seen: BFLAccountState | None,
    report: SweepReport,
) -> None:
    """Wake as many dispatchers as the account may use now: one prober during an outage, one
    checker while rate-limited, else one per free slot with eligible work."""
    if seen is not None and seen.outage_since is not None:
        # One probe at a time: wake one dispatcher when it is due (its lease, if a prober
        # died, has run out by then), never one per queued job.
        if seen.next_probe_at is None or seen.next_probe_at <= now:
            messages.wake_dispatcher(db)
            report.dispatch_wakeups = 1
        return
    paused_until = seen.rate_limited_until if seen is not None else None
    if paused_until is not None and paused_until > now:
        # The dispatcher checks whether a task of ours ended meanwhile.
        messages.wake_dispatcher(db)
        report.dispatch_wakeups = 1
        return
    active = db.scalar(select(func.count()).where(holds_slot())) or 0
    eligible = (
        db.scalar(
            select(func.count()).where(
                Job.status == JobStatus.QUEUED,
                (Job.not_before.is_(None)) | (Job.not_before <= now),
            )
        )
        or 0
    )
    free = account.effective_cap(seen, settings, now) - active
    wakeups = min(eligible, max(free, 0))
    messages.wake_dispatcher(db, wakeups)
    report.dispatch_wakeups = wakeups


def _logged(report: SweepReport) -> SweepReport:
    if any(report.as_dict().values()):
        log.info("sweep: %s", report.as_dict())
    return report


def _reconcile_submitting(
    db: Session,
    settings: Settings,
    now: datetime,
    batch: int,
    report: SweepReport,
    applied: list[uuid.UUID],
) -> None:
    """Apply BFL's kept answers to jobs in submitting; end stale ones that have none."""
    rows = db.execute(
        select(Job.id, Job.claimed_at, Job.estimated_credits)
        .where(Job.status == JobStatus.SUBMITTING)
        .order_by(Job.claimed_at)
        .limit(batch)
    ).all()
    if not rows:
        return
    ids = [row.id for row in rows]
    kept = answers.find_in_journal(ids)
    complete = True
    try:
        kept.update(answers.find(ids))
    except redis.RedisError as exc:
        # Without the kept answers a stale job cannot be told from one whose answer came:
        # leave those for a sweep that can read them.
        log.warning("could not read BFL's kept answers (%s); stale submissions wait", exc)
        complete = False
    stale_before = now - timedelta(seconds=settings.SUBMITTING_STALE_S)
    for row in rows:
        answer = kept.get(row.id)
        if answer is not None:
            # Poll at once: BFL has been working on it since it answered.
            if apply_answer(db, row.id, answer, first_poll=0.0) is not None:
                log.info(
                    "applied BFL's kept answer to job %s (task %s)", row.id, answer.bfl_task_id
                )
                report.answers_applied += 1
                applied.append(row.id)
            continue
        if not complete or row.claimed_at is None or row.claimed_at >= stale_before:
            continue
        message = human_message(
            "submission_unknown",
            f"nothing within {settings.SUBMITTING_STALE_S} s; the worker sending it "
            "may have stopped",
            credits=credits_text(row.estimated_credits),
        )
        if state.finish_unsuccessfully(
            db,
            row.id,
            expected=JobStatus.SUBMITTING,
            target=JobStatus.FAILED,
            error_code="submission_unknown",
            error_message=message,
            now=now,
        ):
            report.submissions_reconciled += 1
