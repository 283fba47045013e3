"""Every status change of a job, each a guarded UPDATE that happens at most once.

Each function runs `UPDATE jobs ... WHERE id = :id AND status = :expected` and returns the
updated Job, or None when the job had already moved on (a redelivered message, a duplicate
poll, a cancel racing a claim). Callers treat None as "someone else did it: do nothing".

    queued ──claim──▶ submitting ──accepted──▶ pending ──ready──▶ ready
      │  ▲               │   │                   ├──▶ moderated
      │  └──requeue──────┘   └──▶ failed          └──▶ failed
      └──▶ cancelled, failed (queue deadline)

Terminal transitions call the cost hook in the same transaction (a pending job's charge was
settled when it became pending), and transitions that free a slot of the active-task cap wake
the dispatcher after commit. A pending job frees its slot when BFL says Ready (`release_slot`),
before its image is stored: the cap counts tasks at BFL.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from functools import cache
from typing import Any, NamedTuple

from sqlalchemy import Table, bindparam, func, select, update
from sqlalchemy.orm import Session

from app.alerts import EVALUATE_TEAM_TASK
from app.alerts.pacing import budget_check_countdown
from app.costs.service import on_job_terminal, record_charge
from app.db import utcnow
from app.jobs import messages
from app.jobs.models import ACTIVE_STATUSES, Job, JobStatus
from app.ops.metrics import job_changed

#: The state machine of docs/architecture.md ("A job's life"); submitting → queued is the safe
#: re-queue after a refusal (429, 503, or a POST that never left), which created no task at BFL;
#: queued → failed is a job never sent within QUEUE_DEADLINE_S.
TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset({JobStatus.SUBMITTING, JobStatus.CANCELLED, JobStatus.FAILED}),
    JobStatus.SUBMITTING: frozenset({JobStatus.PENDING, JobStatus.QUEUED, JobStatus.FAILED}),
    JobStatus.PENDING: frozenset({JobStatus.READY, JobStatus.MODERATED, JobStatus.FAILED}),
}


class IllegalTransition(ValueError):
    """A transition the state machine does not have (a programming error, not a race)."""


def _guarded(
    db: Session,
    job_id: uuid.UUID,
    expected: JobStatus,
    target: JobStatus,
    values: dict[str, Any],
    extra_where: tuple[Any, ...] = (),
    *,
    frees_slot: bool = True,
) -> Job | None:
    if target not in TRANSITIONS.get(expected, frozenset()):
        raise IllegalTransition(f"a job cannot go from {expected} to {target}")
    stmt = (
        update(Job)
        .where(Job.id == job_id, Job.status == expected, *extra_where)
        .values(status=target, **values)
        .returning(Job)
        .execution_options(populate_existing=True, synchronize_session=False)
    )
    job = db.execute(stmt).scalar_one_or_none()
    if job is None:
        return None
    job_changed(db, job, expected.value)  # counted in /metrics once this transaction commits
    if target.terminal:
        on_job_terminal(db, job, expected.value)
    if frees_slot and expected in ACTIVE_STATUSES and target not in ACTIVE_STATUSES:
        # A slot of the active-task cap is free again: let the next queued job have it.
        messages.wake_dispatcher(db)
    return job


def claim(db: Session, job_id: uuid.UUID, now: datetime | None = None) -> Job | None:
    """queued → submitting: this worker will send the one POST. Caller holds the cap lock."""
    return _guarded(
        db,
        job_id,
        JobStatus.QUEUED,
        JobStatus.SUBMITTING,
        {"claimed_at": now or utcnow(), "attempts": Job.attempts + 1, "not_before": None},
    )


def unclaim(db: Session, job_id: uuid.UUID) -> Job | None:
    """submitting → queued: a job claimed for a slot ahead of BFL's Ready and never sent,
    because BFL did not report the task in that slot finished; it keeps its place in line."""
    return _guarded(
        db,
        job_id,
        JobStatus.SUBMITTING,
        JobStatus.QUEUED,
        {"claimed_at": None, "attempts": Job.attempts - 1},
    )


def requeue(
    db: Session, job_id: uuid.UUID, *, not_before: datetime, error_message: str
) -> Job | None:
    """submitting → queued: BFL refused before creating a task (429) or the POST never left."""
    return _guarded(
        db,
        job_id,
        JobStatus.SUBMITTING,
        JobStatus.QUEUED,
        {
            "not_before": not_before,
            "requeues": Job.requeues + 1,
            "claimed_at": None,
            # Kept for people watching the queue; cleared once the job leaves submitting.
            "error_message": error_message,
        },
    )


def clear_waits(db: Session) -> int:
    """queued → queued: every queued job may go as soon as a slot is free.

    The waits were the BFL account's (an outage, a rate-limit pause), now over. Returns how
    many jobs had one.
    """
    result = db.execute(
        update(Job)
        .where(Job.status == JobStatus.QUEUED, Job.not_before.is_not(None))
        .values(not_before=None)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def rearrange_queued(
    db: Session, job_ids: list[uuid.UUID], values: dict[str, Any]
) -> list[uuid.UUID]:
    """queued → queued: pause, resume or move the given jobs in line (`values` are the queue
    fields: `paused_at`, `queue_front`, `queue_key`). Only jobs still queued change, so a job a
    worker claimed meanwhile is left alone. Returns the ids that changed.
    """
    if not job_ids:
        return []
    allowed = {"paused_at", "queue_front", "queue_key"}
    if not set(values) <= allowed:
        raise IllegalTransition(f"only {sorted(allowed)} change while a job is queued")
    result = db.execute(
        update(Job)
        .where(Job.id.in_(job_ids), Job.status == JobStatus.QUEUED)
        .values(**values)
        .returning(Job.id)
        .execution_options(synchronize_session=False)
    )
    return list(result.scalars().all())


def mark_pending(
    db: Session,
    job_id: uuid.UUID,
    *,
    bfl_task_id: str,
    polling_url: str | None,
    cost_credits: Decimal,
    next_poll_at: datetime,
    now: datetime | None = None,
) -> Job | None:
    """submitting → pending, with BFL's id, polling URL and cost, and the ledger charge."""
    job = _guarded(
        db,
        job_id,
        JobStatus.SUBMITTING,
        JobStatus.PENDING,
        {
            "bfl_task_id": bfl_task_id,
            "polling_url": polling_url,
            "cost_credits": cost_credits,
            "submitted_at": now or utcnow(),
            "next_poll_at": next_poll_at,
            "error_message": None,
            "poll_count": 0,
        },
    )
    if job is not None:
        _charge(db, job)
    return job


def _charge(db: Session, job: Job) -> None:
    """Write the job's ledger row; a new charge has the team's budget alerts checked after
    the commit (a message, one per team for the charges of a short window: app/alerts/pacing;
    beat's evaluation catches any that is lost)."""
    if not record_charge(db, job):
        return
    countdown = budget_check_countdown(job.team_id)
    if countdown is not None:
        messages.send_after_commit(
            db,
            messages.Message(
                task=EVALUATE_TEAM_TASK, args=(str(job.team_id),), countdown=countdown or None
            ),
        )


class PollClaim(NamedTuple):
    """The columns a claimed poll needs (not the whole row: a poll runs once or twice a job)."""

    id: uuid.UUID
    team_id: uuid.UUID
    bfl_task_id: str | None
    polling_url: str | None
    submitted_at: datetime | None
    created_at: datetime
    poll_count: int
    unfinished_polls: int
    model: str


def claim_poll(
    db: Session, job_id: uuid.UUID, *, due_by: datetime, lease_until: datetime
) -> PollClaim | None:
    """pending → pending: take the job's next poll if it is due by `due_by`.

    Moves `next_poll_at` to the end of a lease, so a duplicate or early message finds the poll
    not due and does nothing, and a worker that dies mid-poll is noticed by the sweeper once
    the lease runs out. `unfinished_polls` counts polls that started and never finished.
    Returns only the columns the poll needs, or None when the poll is not due or the job is
    no longer pending.
    """
    row = db.execute(
        _claim_poll_statement(),
        {"k_id": job_id, "due_by": due_by, "lease_until": lease_until},
    ).first()
    return None if row is None else PollClaim(*row)


@cache
def _claim_poll_statement() -> Any:
    # Built once: a poll runs once or twice per job, and building the statement (and going
    # through the ORM's bulk layer) cost more CPU than its round trip.
    jobs: Table = Job.__table__  # type: ignore[assignment]
    return (
        update(jobs)
        .where(
            jobs.c.id == bindparam("k_id"),
            jobs.c.status == JobStatus.PENDING,
            (jobs.c.next_poll_at.is_(None)) | (jobs.c.next_poll_at <= bindparam("due_by")),
        )
        .values(
            next_poll_at=bindparam("lease_until", type_=jobs.c.next_poll_at.type),
            poll_count=jobs.c.poll_count + 1,
            unfinished_polls=jobs.c.unfinished_polls + 1,
        )
        .returning(*(jobs.c[name] for name in PollClaim._fields))
    )


def poll_is_due(db: Session, job_id: uuid.UUID, *, due_by: datetime) -> bool:
    """Whether `claim_poll` with this `due_by` would take the job's poll (it changes nothing)."""
    jobs: Table = Job.__table__  # type: ignore[assignment]
    found = db.execute(
        select(jobs.c.id).where(
            jobs.c.id == job_id,
            jobs.c.status == JobStatus.PENDING,
            (jobs.c.next_poll_at.is_(None)) | (jobs.c.next_poll_at <= due_by),
        )
    ).first()
    return found is not None


def reschedule_poll(
    db: Session,
    job_id: uuid.UUID,
    *,
    next_poll_at: datetime,
    progress: float | None,
    clean: bool = True,
) -> bool:
    """pending → pending: the next poll is due at `next_poll_at` (False: no longer pending).

    `clean` says this poll ended normally (BFL still working); a poll that hit trouble it
    will retry (a failed download, storage down) keeps its count in `unfinished_polls`.
    """
    values: dict[str, Any] = {"next_poll_at": next_poll_at}
    if clean:
        values["unfinished_polls"] = 0
    if progress is not None:
        values["progress"] = progress
    stmt = (
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.PENDING)
        .values(**values)
        .returning(Job.id)
        .execution_options(synchronize_session=False)
    )
    return db.execute(stmt).scalar_one_or_none() is not None


def release_slot(
    db: Session, job_id: uuid.UUID, *, bfl_ready_at: datetime, wake: bool = True
) -> bool:
    """pending → pending: BFL said Ready, so the task no longer counts against the account's
    active-task cap; the image is still to be downloaded and stored.

    Sets `bfl_ready_at` once (a second poll of the same Ready task finds it set and changes
    nothing) and, with `wake`, wakes the dispatcher after commit, so the next queued job goes
    to BFL while this one's image is fetched (without: the caller claims the next job itself,
    in this transaction). Returns False when it was released already or is no longer pending.
    """
    stmt = (
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.PENDING, Job.bfl_ready_at.is_(None))
        .values(bfl_ready_at=bfl_ready_at, progress=1.0)
        .returning(Job.id)
        .execution_options(synchronize_session=False)
    )
    if db.execute(stmt).scalar_one_or_none() is None:
        return False
    if wake:
        messages.wake_dispatcher(db)
    return True


def reclaim_slot(db: Session, job_id: uuid.UUID) -> bool:
    """pending → pending: undo a `release_slot` made ahead of BFL's Ready that BFL did not
    confirm (the task is still running), so it counts against the cap again. False when the
    job is no longer pending or holds its slot already."""
    stmt = (
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.PENDING, Job.bfl_ready_at.is_not(None))
        .values(bfl_ready_at=None)
        .returning(Job.id)
        .execution_options(synchronize_session=False)
    )
    return db.execute(stmt).scalar_one_or_none() is not None


def mark_ready(
    db: Session,
    job_id: uuid.UUID,
    *,
    result_seed: int | None,
    bfl_ready_at: datetime,
    now: datetime | None = None,
    slot_released: bool = False,
    released_ahead: bool = False,
) -> Job | None:
    """pending → ready: the image is stored under our own keys (the caller adds the Image).

    `bfl_ready_at` is kept if `release_slot` set it already, unless the slot was
    `released_ahead` of BFL's Ready (it then holds the predicted moment, replaced by BFL's);
    with `slot_released` (the caller released it) the dispatcher is not woken a second time.
    """
    return _guarded(
        db,
        job_id,
        JobStatus.PENDING,
        JobStatus.READY,
        {
            "result_seed": result_seed,
            "bfl_ready_at": (
                bfl_ready_at if released_ahead else func.coalesce(Job.bfl_ready_at, bfl_ready_at)
            ),
            "finished_at": now or utcnow(),
            "progress": 1.0,
            "next_poll_at": None,
            "unfinished_polls": 0,
            "error_code": None,
            "error_message": None,
        },
        frees_slot=not slot_released,
    )


def finish_unsuccessfully(
    db: Session,
    job_id: uuid.UUID,
    *,
    expected: JobStatus,
    target: JobStatus,
    error_code: str,
    error_message: str,
    now: datetime | None = None,
    moderation_reasons: list[str] | None = None,
) -> Job | None:
    """→ failed / moderated / cancelled, with a machine code and a message for people.

    `moderation_reasons` are the filters BFL named for a moderated task, kept as it sent them.
    """
    if target not in (JobStatus.FAILED, JobStatus.MODERATED, JobStatus.CANCELLED):
        raise IllegalTransition(f"{target} is not an unsuccessful end")
    values: dict[str, Any] = {
        "error_code": error_code,
        "error_message": error_message,
        "finished_at": now or utcnow(),
        "next_poll_at": None,
        "not_before": None,
    }
    if moderation_reasons is not None:
        values["moderation_reasons"] = list(moderation_reasons)
    return _guarded(db, job_id, expected, target, values)


def cancel(db: Session, job_id: uuid.UUID, *, by_name: str = "") -> Job | None:
    """queued → cancelled: only a job that never left for BFL can be cancelled."""
    who = f" by {by_name}" if by_name else ""
    return finish_unsuccessfully(
        db,
        job_id,
        expected=JobStatus.QUEUED,
        target=JobStatus.CANCELLED,
        error_code="cancelled",
        error_message=f"Cancelled{who} before it was sent to BFL.",
    )


def note_late_acceptance(
    db: Session,
    job_id: uuid.UUID,
    *,
    bfl_task_id: str,
    cost_credits: Decimal | None,
    error_message: str | None = None,
) -> Job | None:
    """Record BFL's answer on a job reconciled as `submission_unknown` before the answer came.

    The sweeper gave up on a POST that was still waiting for BFL's answer (it took longer than
    SUBMITTING_STALE_S); the answer then arrived, so the job was accepted and charged after
    all. Not a transition: the job stays failed (nobody polls it), but it gets BFL's id, for
    an admin to find the task, and its charge: the cost BFL reported, or the estimate when it
    reported none, written to the ledger in this transaction, which settles the reservation
    that `submission_unknown` kept held. `error_message`, when given, replaces the message that
    said no answer came. Returns the job, or None when it was not in that state (the id was
    recorded already, or the job ended some other way).
    """
    values: dict[str, Any] = {"bfl_task_id": bfl_task_id, "cost_credits": cost_credits}
    if error_message is not None:
        values["error_message"] = error_message
    stmt = (
        update(Job)
        .where(
            Job.id == job_id,
            Job.status == JobStatus.FAILED,
            Job.error_code == "submission_unknown",
            Job.bfl_task_id.is_(None),
        )
        .values(**values)
        .returning(Job)
        .execution_options(populate_existing=True, synchronize_session=False)
    )
    job = db.execute(stmt).scalar_one_or_none()
    if job is not None:
        # With no reported cost, record_charge writes the estimate to the job and the ledger.
        _charge(db, job)
    return job
