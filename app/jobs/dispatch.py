"""Claiming the fairest queued job under the account's cap, and the task run that submits it.

Count-and-claim is serialized across workers by a transaction-level advisory lock, so the cap
holds however many workers run; nothing waits on BFL inside that transaction. During an
outage the one caller holding the probe's lease checks BFL instead (app/jobs/account.py).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from app.bfl.catalogue import UnknownModel, get_model
from app.bfl.client import BFLClient
from app.db import session_scope, utcnow
from app.jobs import account, messages, state
from app.jobs.models import ACTIVE_STATUSES, Job, JobStatus, holds_slot, status_sql
from app.jobs.outcomes import Outcome
from app.jobs.submission import Claimed, submit_claimed
from app.ops.logs import bind_context, clear_context, current_context
from app.settings import Settings, get_settings

log = logging.getLogger(__name__)

#: Key of the transaction-level advisory lock that serializes count-and-claim across workers.
DISPATCH_LOCK_KEY = 0x5F1D_C0DE_0001


def model_cap(model: str, account_cap: int) -> int:
    """The active-task cap for one model: the account cap or the catalogue's lower one."""
    try:
        spec = get_model(model)
    except UnknownModel:
        return account_cap
    if spec.active_task_cap is None:
        return account_cap
    return min(account_cap, spec.active_task_cap)


# Fair choice (docs/architecture.md, "Queue order"): paused jobs and paused teams' jobs are
# skipped. Each user's first eligible job in their own line (moved to the front first, then by
# place in line: when queued or last moved) competes; a manager's "front" goes before everyone
# else (the earliest moved first); otherwise the user with the fewest jobs at BFL right now
# goes first, then the earliest place in line. A 200-image batch then takes turns with a
# teammate's single image instead of going first in full. The statuses are JobStatus literals
# (never input), so the planner can match them against the partial index ix_jobs_outstanding.
_PICK_FAIR = text(
    f"""
    WITH eligible AS (
        SELECT DISTINCT ON (user_id) id, user_id, queue_front,
               coalesce(queue_key, created_at) AS place, batch_index
        FROM jobs
        WHERE status = '{JobStatus.QUEUED}'
          AND paused_at IS NULL
          AND NOT EXISTS (SELECT 1 FROM team_queue_pauses p WHERE p.team_id = jobs.team_id)
          AND (not_before IS NULL OR not_before <= :now)
          AND NOT (model = ANY(:blocked))
        ORDER BY user_id, queue_front DESC, coalesce(queue_key, created_at), batch_index, id
    ), load AS (
        SELECT user_id, count(*) AS active
        FROM jobs
        WHERE status IN ({status_sql(ACTIVE_STATUSES)}) AND bfl_ready_at IS NULL
        GROUP BY user_id
    )
    SELECT e.id
    FROM eligible e LEFT JOIN load l ON l.user_id = e.user_id
    ORDER BY e.queue_front DESC, CASE WHEN e.queue_front THEN e.place END,
             coalesce(l.active, 0), e.place, e.batch_index, e.id
    LIMIT 1
    """  # noqa: S608
)


@dataclass
class Dispatch:
    """What one look at the queue decided.

    `job`: claimed (now `submitting`); `room`: another slot is free (with a job), or a slot
    was free but nothing was eligible (without one); `probe`: the account is in an outage and
    this caller holds the lease of its one probe; `retry_at`: the account is closed until then;
    `free`: with a job, how many slots are still free after it.
    """

    job: Job | None = None
    room: bool = False
    free: int = 0
    probe: bool = False
    retry_at: datetime | None = None


def dispatch_next(
    db: Session, settings: Settings, now: datetime, *, look_first: bool = True
) -> Dispatch:
    """Take the fairest eligible queued job if the account and the cap allow.

    The advisory lock is transaction-level: it serializes count-and-claim across every worker
    and is released by the caller's COMMIT, which also makes the claim visible to the next.
    The account's state (app/jobs/account.py) is read under it: during an outage nothing is
    claimed and one caller gets the probe; while BFL's rate limit pauses the account nothing
    is claimed; the cap is min(BFL_MAX_ACTIVE_TASKS, the cap learned from BFL's 429s).
    `look_first=False` skips the look without the lock, for a caller that has just freed a
    slot in this transaction (so the cap is not full).
    """
    # A look without the lock first: with the cap full or the account paused there is nothing
    # to do, and the many wake-ups a big batch sends need not wait for the lock one after
    # another. Safe, because a slot freed (or a pause ended) after this read sends a wake-up
    # of its own once its transaction commits, and the sweeper re-drives due probes.
    if look_first:
        seen = account.peek(db)
        probe_at = seen.next_probe_at if seen is not None and seen.outage_since else None
        if probe_at is not None and probe_at > now:
            return Dispatch(retry_at=probe_at)
        cap = account.effective_cap(seen, settings, now)
        active_now = db.scalar(select(func.count()).where(holds_slot())) or 0
        outage = seen is not None and seen.outage_since is not None
        if active_now >= cap and not outage:
            return Dispatch()
    db.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": DISPATCH_LOCK_KEY})
    gate = account.gate(db, settings, now)
    if not gate.open:
        return Dispatch(probe=gate.probe, retry_at=gate.retry_at)
    cap = gate.cap
    rows = db.execute(select(Job.model, func.count()).where(holds_slot()).group_by(Job.model)).all()
    per_model: dict[str, int] = {model: n for model, n in rows}
    active = sum(per_model.values())
    if active >= cap:
        return Dispatch()
    blocked = [m for m, n in per_model.items() if n >= model_cap(m, cap)]
    job_id = db.execute(_PICK_FAIR, {"now": now, "blocked": blocked}).scalar()
    if job_id is None:
        return Dispatch(room=True)  # a slot is free, but nothing may go now
    job = state.claim(db, job_id, now)
    free = cap - active - 1 if job is not None else 0
    return Dispatch(job=job, room=free > 0, free=free)


def claim_next(db: Session, settings: Settings, now: datetime) -> tuple[Job | None, bool]:
    """`dispatch_next` as (job, room): with a job, whether another slot is still free; without
    one, whether a slot was free (so nothing was eligible) rather than the cap being full or
    the account paused."""
    found = dispatch_next(db, settings, now)
    return found.job, found.room


def _earliest_backoff(db: Session) -> datetime | None:
    return db.scalar(
        select(func.min(Job.not_before)).where(
            Job.status == JobStatus.QUEUED, Job.not_before.is_not(None)
        )
    )


@dataclass(frozen=True)
class FreedSlot:
    """A pending job BFL has just reported Ready (at `bfl_ready_at`): its slot of the cap is
    given back and handed to the next queued job in one transaction."""

    job_id: uuid.UUID
    bfl_ready_at: datetime


def submit_next(client: BFLClient, *, freed: FreedSlot | None = None) -> Outcome:
    """Submit the fairest queued job if the account and a slot of the active-task cap allow.

    One wake-up message runs this once; when it claimed a job and room remains, it wakes up
    to two other workers so free slots fill in parallel. During an outage the one worker that
    gets the probe's lease checks BFL instead (see app/jobs/account.py).

    With `freed`, the poll that saw a task Ready runs this itself: the slot is released and
    the next job claimed in one transaction and sent at once, with no wake-up through the
    broker in between. SKIPPED when that slot was released already (a duplicate poll: whoever
    released it handed it on).
    """
    settings = get_settings()
    now = utcnow()
    with session_scope() as db:
        if freed is not None and not state.release_slot(
            db, freed.job_id, bfl_ready_at=freed.bfl_ready_at, wake=False
        ):
            return Outcome.SKIPPED
        found = dispatch_next(db, settings, now, look_first=freed is None)
        job = found.job
        if job is None:
            if not found.probe:
                return _nothing_sent(db, found, now)
            # else: the probe's lease commits with this transaction; the probe goes below.
        else:
            if found.room:
                # Two wake-ups while two slots are free: the chains double, so an empty cap of
                # 24 fills in a handful of rounds of claims rather than 24 one after another.
                messages.wake_dispatcher(db, min(2, found.free))
            claimed = _claimed(job)
    if job is None:
        return _probe(client, settings)
    # Every line of this submission names the job, up to Celery's own "succeeded" line; the
    # task's postrun hook clears the context before the next task (app.ops.celery_hooks).
    bind_context(job_id=claimed.id)
    return submit_claimed(client, claimed, settings)


def take_slot_ahead(job_id: uuid.UUID, expected_ready: datetime) -> list[Claimed]:
    """For a poll aimed at the moment its task should finish: release the task's slot and
    claim the next queued job now, before asking BFL, so that job's POST can go the moment
    BFL says Ready (`send_taken`), or the claim be undone if BFL does not (`give_back`).

    The cap's count is unchanged throughout (one slot: the task, then the claimed job), and
    nothing is POSTed before BFL has reported the task finished. Returns the claimed job (one
    or none); with none, nothing was changed: the slot is released after Ready as usual.
    """
    settings = get_settings()
    with session_scope() as db:
        if not state.release_slot(db, job_id, bfl_ready_at=expected_ready, wake=False):
            return []
        found = dispatch_next(db, settings, utcnow(), look_first=False)
        if found.job is None:
            db.rollback()  # nothing to send (or a probe is due): keep the slot held
            return []
        return [_claimed(found.job)]


def send_taken(client: BFLClient, claims: list[Claimed]) -> Outcome:
    """BFL reported the task behind `take_slot_ahead` finished: POST the job claimed for its
    slot, from this process. The submission's lines name that job; the poll's are restored."""
    context = dict(current_context())
    try:
        outcome = Outcome.IDLE
        for claimed in claims:
            # The poll task's own fields (its task id and name) stay on the lines.
            bind_context(job_id=claimed.id)
            outcome = submit_claimed(client, claimed, get_settings())
        return outcome
    finally:
        clear_context()
        bind_context(**context)


def give_back(job_id: uuid.UUID, claims: list[Claimed]) -> None:
    """BFL did not report the task finished (or could not be asked): the task holds its slot
    again and the jobs claimed for it go back to the queue, unsent, in their places."""
    with session_scope() as db:
        state.reclaim_slot(db, job_id)
        for claimed in claims:
            state.unclaim(db, claimed.id)


def _claimed(job: Job) -> Claimed:
    return Claimed(
        job.id,
        job.team_id,
        job.model,
        dict(job.params),
        job.estimated_credits,
        job.requeues,
        job.created_at,
    )


def _nothing_sent(db: Session, found: Dispatch, now: datetime) -> Outcome:
    if found.retry_at is not None:
        # The account is paused. No wake-up is re-sent from here: whoever paused it (a
        # refusal, a failed probe) sent the one for when it may open, and the sweeper re-drives
        # it if that was lost. Re-sending here would keep every wake-up that ever met the
        # pause alive, and their number would only grow.
        return Outcome.PAUSED
    if found.room:
        backoff_until = _earliest_backoff(db)
        if backoff_until is not None and backoff_until > now:
            # A slot is free while jobs wait: come back when the first may go. (With the cap
            # full, the next freed slot sends a wake-up anyway.)
            messages.wake_dispatcher(db, countdown=(backoff_until - now).total_seconds() + 0.05)
    return Outcome.IDLE


def _probe(client: BFLClient, settings: Settings) -> Outcome:
    """Check whether BFL answers again; if so, wake enough dispatchers to fill every slot."""
    answered, reason = account.probe(client)
    now = utcnow()
    with session_scope() as db:
        over, next_probe = account.record_probe(
            db, settings, answered=answered, reason=reason, now=now
        )
        if over:
            cap = account.effective_cap(account.peek(db), settings, now)
            active = db.scalar(select(func.count()).where(holds_slot())) or 0
            queued = db.scalar(select(func.count()).where(Job.status == JobStatus.QUEUED)) or 0
            messages.wake_dispatcher(db, min(queued, max(cap - active, 0)), burst=True)
        elif next_probe is not None:
            log.info("BFL still unreachable (%s); next probe in %.1f s", reason, _secs(next_probe))
            messages.wake_dispatcher(db, countdown=_secs(next_probe) + 0.05)
    return Outcome.PROBED


def _secs(when: datetime) -> float:
    return max(0.0, (when - utcnow()).total_seconds())
