"""Queue control: pausing, resuming and reordering queued jobs and whole batches, a team's
queue paused by a manager, and cancelling or retrying a batch. The pages and the JSON API
share these rules; docs/architecture.md ("Queue order") says how the dispatcher uses them.

Who may do what:

- pause / resume a job or a batch: its owner, or a manager of the team;
- move to the back: its owner (only their own line changes) or a manager;
- move to the front, pause / resume the whole team's queue: managers and admins;
- cancel a batch: its owner or a manager (like a single cancel); retry a batch's failed jobs:
  anyone in the team (like a single retry).

Every action a manager takes is written to the audit log in the same transaction.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from app.audit.service import record
from app.db import utcnow
from app.jobs import messages, state
from app.jobs.errors import JobError
from app.jobs.models import Job, JobStatus, TeamQueuePause
from app.jobs.service import RETRYABLE_STATUSES, create_jobs
from app.settings import get_settings


class Move(enum.StrEnum):
    """What can be done to queued jobs."""

    PAUSE = "pause"
    RESUME = "resume"
    FRONT = "front"
    BACK = "back"


@dataclass(frozen=True)
class Caller:
    """Who acts: their id, team, whether they manage it, and their e-mail (for the audit log)."""

    user_id: uuid.UUID
    team_id: uuid.UUID
    is_manager: bool
    email: str


@dataclass
class Outcome:
    """What an action did: the ids that changed, and those it left as they were (not queued)."""

    changed: list[uuid.UUID] = field(default_factory=list)
    unchanged: list[uuid.UUID] = field(default_factory=list)


def _values(move: Move, now: datetime) -> dict[str, Any]:
    if move is Move.PAUSE:
        return {"paused_at": now}
    if move is Move.RESUME:
        return {"paused_at": None}
    if move is Move.FRONT:
        return {"queue_front": True, "queue_key": now}
    return {"queue_front": False, "queue_key": now}


def _allowed(caller: Caller, owners: set[uuid.UUID], move: Move) -> None:
    if move is Move.FRONT and not caller.is_manager:
        raise JobError("Only a manager or an admin can move jobs to the front.", "forbidden")
    if not caller.is_manager and owners - {caller.user_id}:
        raise JobError(
            f"Only the person who queued these jobs or a manager can {move.value} them.",
            "forbidden",
        )


def _audit(
    db: Session, caller: Caller, action: str, target_type: str, target: uuid.UUID, n: int
) -> None:
    if caller.is_manager:
        record(
            db,
            team_id=caller.team_id,
            actor_id=caller.user_id,
            actor_email=caller.email,
            action=action,
            target_type=target_type,
            target_id=target,
            after={"jobs": n},
        )


def _team_jobs(db: Session, team_id: uuid.UUID, *where: Any) -> list[Job]:
    return list(
        db.scalars(
            select(Job)
            .where(Job.team_id == team_id, Job.deleted_at.is_(None), *where)
            .order_by(Job.batch_index, Job.id)
        ).all()
    )


def batch_jobs(db: Session, *, team_id: uuid.UUID, batch_id: uuid.UUID) -> list[Job]:
    """The team's jobs of one batch, in batch order. Raises JobError "not_found" for none."""
    jobs = _team_jobs(db, team_id, Job.batch_id == batch_id)
    if not jobs:
        raise JobError("No such batch in your team.", "not_found")
    return jobs


def _apply(
    db: Session, caller: Caller, jobs: list[Job], move: Move, target: tuple[str, uuid.UUID]
) -> Outcome:
    _allowed(caller, {j.user_id for j in jobs}, move)
    queued = [j.id for j in jobs if j.status == JobStatus.QUEUED]
    if not queued:
        raise JobError(
            f"Only queued jobs can be {_done(move)}; nothing here is waiting.", "not_queued"
        )
    changed = state.rearrange_queued(db, queued, _values(move, utcnow()))
    _audit(db, caller, f"queue.{target[0]}.{move.value}", target[0], target[1], len(changed))
    if move is Move.RESUME or move is Move.FRONT:
        messages.wake_dispatcher(db)
    for job in jobs:
        db.refresh(job)
    return Outcome(changed=changed, unchanged=[j.id for j in jobs if j.id not in changed])


def _done(move: Move) -> str:
    return {
        Move.PAUSE: "paused",
        Move.RESUME: "resumed",
        Move.FRONT: "moved",
        Move.BACK: "moved",
    }[move]


def move_job(db: Session, caller: Caller, job_id: uuid.UUID, move: Move) -> Job:
    """Pause, resume or move one queued job of the caller's team; returns it as it now is.

    Raises JobError: "not_found" (no such job in the team), "forbidden" (someone else's job
    and not a manager; "front" by a non-manager), "not_queued" (it already left the queue).
    """
    jobs = _team_jobs(db, caller.team_id, Job.id == job_id)
    if not jobs:
        raise JobError("No such job in your team.", "not_found")
    _apply(db, caller, jobs, move, ("job", job_id))
    return jobs[0]


def move_batch(db: Session, caller: Caller, batch_id: uuid.UUID, move: Move) -> Outcome:
    """Pause, resume or move every queued job of one batch (jobs at BFL are left alone).

    Raises JobError as `move_job` does ("not_found" for an unknown batch).
    """
    jobs = batch_jobs(db, team_id=caller.team_id, batch_id=batch_id)
    return _apply(db, caller, jobs, move, ("batch", batch_id))


def cancel_batch(db: Session, caller: Caller, batch_id: uuid.UUID) -> Outcome:
    """Cancel every queued job of a batch. Jobs already at BFL finish (as a single cancel
    refuses them) and are listed as unchanged, with those already ended.

    Raises JobError "not_found", "forbidden" (someone else's batch, not a manager) and
    "not_cancellable" when no job of the batch is still queued.
    """
    jobs = batch_jobs(db, team_id=caller.team_id, batch_id=batch_id)
    if not caller.is_manager and {j.user_id for j in jobs} - {caller.user_id}:
        raise JobError(
            "Only the person who queued this batch or a manager can cancel it.", "forbidden"
        )
    if not any(j.status == JobStatus.QUEUED for j in jobs):
        raise JobError(
            "No job of this batch is still queued: jobs sent to BFL finish, ended ones stay.",
            "not_cancellable",
        )
    by = "" if all(j.user_id == caller.user_id for j in jobs) else "a manager"
    changed = [
        j.id for j in jobs if j.status == JobStatus.QUEUED and state.cancel(db, j.id, by_name=by)
    ]
    _audit(db, caller, "queue.batch.cancel", "batch", batch_id, len(changed))
    for job in jobs:
        db.refresh(job)
    return Outcome(changed=changed, unchanged=[j.id for j in jobs if j.id not in changed])


def retry_batch(db: Session, caller: Caller, batch_id: uuid.UUID) -> list[Job]:
    """Queue again, as one new batch, every failed, moderated or cancelled job of a batch.

    Raises JobError "not_found" and "not_retryable" (nothing to retry), and what
    `create_jobs` raises (`RequestInvalid`, `BudgetExceeded`: then nothing is queued).
    """
    jobs = batch_jobs(db, team_id=caller.team_id, batch_id=batch_id)
    failed = [j for j in jobs if j.status in RETRYABLE_STATUSES]
    if not failed:
        raise JobError("No job of this batch failed, was moderated or cancelled.", "not_retryable")
    new_batch = uuid.uuid4()
    created: list[Job] = []
    for index, old in enumerate(failed):
        (job,) = create_jobs(
            db,
            user_id=caller.user_id,
            team_id=caller.team_id,
            model=old.model,
            params=old.params,
            count=1,
            retry_of=old,
        )
        job.batch_id, job.batch_index = new_batch, index
        created.append(job)
    db.flush()
    _audit(db, caller, "queue.batch.retry", "batch", batch_id, len(created))
    return created


def team_paused(db: Session, team_id: uuid.UUID) -> TeamQueuePause | None:
    """The team's queue pause, or None while its queue runs."""
    return db.get(TeamQueuePause, team_id)


def pause_team(db: Session, caller: Caller, *, paused: bool) -> TeamQueuePause | None:
    """Pause (or resume) the caller's team's whole queue; managers and admins only.

    While paused nothing of the team is claimed; jobs already at BFL finish. Pausing a paused
    queue keeps the first pause. Returns the pause (None once resumed). Raises JobError
    "forbidden" for a member.
    """
    if not caller.is_manager:
        raise JobError("Only a manager or an admin can pause the team's queue.", "forbidden")
    before = team_paused(db, caller.team_id) is not None
    if paused:
        db.execute(
            insert(TeamQueuePause)
            .values(team_id=caller.team_id, paused_at=utcnow(), paused_by_id=caller.user_id)
            .on_conflict_do_nothing()
        )
    else:
        db.execute(delete(TeamQueuePause).where(TeamQueuePause.team_id == caller.team_id))
        messages.wake_dispatcher(db, get_settings().BFL_MAX_ACTIVE_TASKS)
    record(
        db,
        team_id=caller.team_id,
        actor_id=caller.user_id,
        actor_email=caller.email,
        action="queue.team.pause" if paused else "queue.team.resume",
        target_type="team",
        target_id=caller.team_id,
        before={"paused": before},
        after={"paused": paused},
    )
    db.expire_all()
    return team_paused(db, caller.team_id)
