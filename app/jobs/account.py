"""The BFL account's shared state: outages waited out and rate limits honoured, as one account.

BFL's outages and its active-task limit belong to the account, not to a job. One row in
PostgreSQL (`bfl_account_state`) records them for every worker on every host, updated under a
row lock inside short transactions, so:

- the first failure to reach BFL opens an *outage*; from then on no job is sent and ONE probe
  at a time checks whether BFL answers again, with a growing back-off capped at
  BFL_PROBE_MAX_INTERVAL_S; when it answers, the queue drains at full speed;
- a 429 *pauses* sending for the whole account until one of our tasks at BFL ends or a short
  capped back-off passes, and teaches the studio BFL's effective cap when it is lower than
  BFL_MAX_ACTIVE_TASKS (another application may share the account); that learned cap rises
  by one after each quiet BFL_CAP_RAISE_AFTER_S.

The probe is `GET /v1/credits`, not a job's POST. A POST answered 500/502/504, or sent with no
answer coming back, may have created a charged task, and those are exactly the answers a
struggling gateway gives: a job used as the probe would be put at risk once per probe. The
credits read is free and safe to repeat; any HTTP answer other than 429 and 5xx proves BFL is
answering (even 401: the jobs then fail with BFL's own reason, which is the truth). If the read
path were up while submissions still fail, the next POST reopens the outage: one job more.

PostgreSQL holds every due time (the probe, the end of a pause); Celery wake-ups only shorten
the wait and the sweeper re-drives whatever a lost wake-up missed.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from app.bfl.client import BFLClient
from app.bfl.errors import BFLError, NoResponse, NotSent, RateLimited, RateLimitInfo, ServerFailed
from app.jobs import state as state_changes
from app.jobs.models import BFLAccountState, Job, JobStatus
from app.settings import Settings

log = logging.getLogger(__name__)

#: The one row's key.
ROW_ID = 1
#: First probe after an outage opens; each failed probe doubles the wait (with jitter).
FIRST_PROBE_S = 1.0
#: Pause after a 429 that names no wait (no Retry-After, no body retry_after).
DEFAULT_RATE_LIMIT_PAUSE_S = 5.0


def _row(db: Session, *, lock: bool) -> BFLAccountState:
    db.execute(insert(BFLAccountState).values(id=ROW_ID).on_conflict_do_nothing())
    stmt = select(BFLAccountState).where(BFLAccountState.id == ROW_ID)
    if lock:
        stmt = stmt.with_for_update()
    return db.execute(stmt.execution_options(populate_existing=True)).scalar_one()


def peek(db: Session) -> BFLAccountState | None:
    """The account state as it is now, without a lock (None before anything was recorded)."""
    return db.execute(
        select(BFLAccountState)
        .where(BFLAccountState.id == ROW_ID)
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()


def _pending_at_bfl(db: Session) -> int:
    return (
        db.scalar(
            select(func.count()).where(Job.status == JobStatus.PENDING, Job.bfl_ready_at.is_(None))
        )
        or 0
    )


def effective_cap(state: BFLAccountState | None, settings: Settings, now: datetime) -> int:
    """min(BFL_MAX_ACTIVE_TASKS, the learned cap raised by one per quiet BFL_CAP_RAISE_AFTER_S)."""
    configured = settings.BFL_MAX_ACTIVE_TASKS
    if state is None or state.learned_cap is None:
        return configured
    steps = _raise_steps(state, settings, now)
    return min(configured, state.learned_cap + steps)


def _raise_steps(state: BFLAccountState, settings: Settings, now: datetime) -> int:
    marks = [t for t in (state.learned_cap_at, state.last_rate_limit_at) if t is not None]
    quiet = (now - max(marks)).total_seconds() if marks else 0.0
    return max(0, int(quiet // settings.BFL_CAP_RAISE_AFTER_S))


@dataclass(frozen=True)
class Gate:
    """Whether the account lets a POST go now (decided under the dispatch lock).

    `probe`: the caller holds the probe's lease and must probe BFL (and send nothing else);
    `retry_at`: when the account may open next (None when it is open); `cap`: the effective
    active-task cap.
    """

    open: bool
    cap: int
    probe: bool = False
    retry_at: datetime | None = None


def gate(db: Session, settings: Settings, now: datetime) -> Gate:
    """Decide, under the row lock, whether sending may go on; take the probe's lease if due.

    Call inside the dispatcher's transaction, after its advisory lock. Raises the learned cap
    when it has been quiet long enough, and lifts a rate-limit pause once one of our tasks at
    BFL has ended since the 429 (BFL then has room again).
    """
    state = _row(db, lock=True)
    if state.learned_cap is not None:
        steps = _raise_steps(state, settings, now)
        if steps:
            raised = state.learned_cap + steps
            state.learned_cap = None if raised >= settings.BFL_MAX_ACTIVE_TASKS else raised
            state.learned_cap_at = now
            log.info("BFL cap probe: now trying %s active tasks", raised)
    cap = effective_cap(state, settings, now)
    if state.outage_since is not None:
        if state.next_probe_at is None or state.next_probe_at <= now:
            # The lease: nobody else probes until this probe has answered or timed out.
            lease = settings.BFL_CONNECT_TIMEOUT_S + settings.BFL_TIMEOUT_S + 1.0
            state.next_probe_at = now + timedelta(seconds=lease)
            state.updated_at = now
            return Gate(open=False, cap=cap, probe=True, retry_at=state.next_probe_at)
        return Gate(open=False, cap=cap, retry_at=state.next_probe_at)
    if state.rate_limited_until is not None:
        pending = _pending_at_bfl(db)
        baseline = state.active_at_rate_limit
        if baseline is not None and pending > baseline:
            # POSTs that were in flight when BFL refused have been accepted since: BFL runs
            # that many of ours, so its cap for us is at least that, and a task ending is
            # measured from there.
            state.active_at_rate_limit = baseline = pending
            if state.learned_cap is not None and pending > state.learned_cap:
                state.learned_cap = pending if pending < settings.BFL_MAX_ACTIVE_TASKS else None
                cap = effective_cap(state, settings, now)
        if state.rate_limited_until <= now:
            state.rate_limited_until = None
        elif baseline is not None and pending < baseline:
            # One of our tasks ended at BFL since it refused: a slot is free again.
            state.rate_limited_until = None
            state_changes.clear_waits(db)
        else:
            return Gate(open=False, cap=cap, retry_at=state.rate_limited_until)
    return Gate(open=True, cap=cap)


def probe_backoff(failures: int, settings: Settings) -> float:
    """Seconds before the next probe after `failures` failed ones: doubling, jittered, capped."""
    ceiling = settings.BFL_PROBE_MAX_INTERVAL_S
    # Jitter keeps several studios on one account (or one after a restart) from probing in step.
    return min(ceiling, random.uniform(0.75, 1.0) * FIRST_PROBE_S * 2.0 ** min(failures, 10))


def note_unreachable(db: Session, settings: Settings, reason: str, now: datetime) -> datetime:
    """BFL did not answer (or failed): open the account's outage if it is not open yet.

    Returns when the account will be tried next (the next probe). Call in the transaction
    that re-queues or fails the job, so the two commit together.
    """
    state = _row(db, lock=True)
    state.outage_reason = reason[:300]
    state.updated_at = now
    if state.outage_since is None:
        state.outage_since = now
        state.probe_failures = 0
        state.next_probe_at = now + timedelta(seconds=FIRST_PROBE_S)
        log.warning("BFL outage: sending paused for the whole account (%s)", reason)
    assert state.next_probe_at is not None
    return state.next_probe_at


def probe(client: BFLClient) -> tuple[bool, str]:
    """Ask BFL whether it answers (`GET /v1/credits`): (answering, what happened)."""
    try:
        client.credits()
    except RateLimited:
        return True, "HTTP 429"  # busy, but answering: the rate limiter deals with that
    except (NotSent, NoResponse) as exc:
        return False, exc.message
    except ServerFailed as exc:
        return False, f"HTTP {exc.status_code}"
    except BFLError as exc:
        # 401/403, an unreadable body...: BFL answered. Submissions will meet the real reason.
        log.warning("BFL probe answered with an error, taken as BFL answering: %s", exc)
        return True, exc.code
    return True, "ok"


def record_probe(
    db: Session, settings: Settings, *, answered: bool, reason: str, now: datetime
) -> tuple[bool, datetime | None]:
    """Record a probe's result: (outage over, when the next probe is due if not).

    Ending the outage clears the per-job waits it set, so the whole queue is eligible at once.
    """
    state = _row(db, lock=True)
    if state.outage_since is None:
        return True, None  # someone else's probe ended it already
    if answered:
        lasted = (now - state.outage_since).total_seconds()
        log.warning("BFL answers again after %.0f s: sending resumes", lasted)
        state.outage_since = None
        state.outage_reason = None
        state.next_probe_at = None
        state.probe_failures = 0
        state.updated_at = now
        state_changes.clear_waits(db)
        return True, None
    state.probe_failures += 1
    state.outage_reason = reason[:300]
    state.next_probe_at = now + timedelta(seconds=probe_backoff(state.probe_failures, settings))
    state.updated_at = now
    return False, state.next_probe_at


def note_rate_limited(db: Session, settings: Settings, exc: RateLimited, now: datetime) -> datetime:
    """BFL refused a POST for active tasks: pause the account and learn its effective cap.

    The pause lasts Retry-After (header or body) capped at BFL_RETRY_AFTER_MAX_S, or
    DEFAULT_RATE_LIMIT_PAUSE_S without one, and ends sooner when one of our tasks at BFL ends.
    The learned cap is the number of our tasks BFL was running (pending) when it refused:
    what the account really lets us have while something else shares it. Returns when the
    account will be tried next.
    """
    state = _row(db, lock=True)
    wait = exc.retry_after if exc.retry_after is not None else DEFAULT_RATE_LIMIT_PAUSE_S
    if exc.rate_limit is not None and exc.rate_limit.reset_after_s is not None:
        wait = max(wait, exc.rate_limit.reset_after_s)
    wait = min(max(wait, 0.0), settings.BFL_RETRY_AFTER_MAX_S)
    pending = _pending_at_bfl(db)
    configured = settings.BFL_MAX_ACTIVE_TASKS
    learned = max(1, pending)
    if exc.rate_limit is not None and exc.rate_limit.limit:
        learned = min(learned, exc.rate_limit.limit)
    if learned < configured:
        current = effective_cap(state, settings, now)
        state.learned_cap = min(current, learned)
        state.learned_cap_at = now
    until = now + timedelta(seconds=wait)
    if state.rate_limited_until is None or state.rate_limited_until < until:
        state.rate_limited_until = until
    state.last_rate_limit_at = now
    state.active_at_rate_limit = pending
    if exc.rate_limit is not None:
        state.rate_limit_headers = exc.rate_limit.as_dict()
    state.updated_at = now
    return state.rate_limited_until


def note_rate_limit_headers(
    db: Session, settings: Settings, info: RateLimitInfo, now: datetime
) -> None:
    """X-RateLimit-* headers on an accepted POST: remember them; Remaining 0 pauses sending
    until Reset (capped), and a Limit below BFL_MAX_ACTIVE_TASKS becomes the learned cap."""
    state = _row(db, lock=True)
    state.rate_limit_headers = info.as_dict()
    state.updated_at = now
    if info.limit and info.limit < effective_cap(state, settings, now):
        state.learned_cap = info.limit
        state.learned_cap_at = now
    if info.remaining == 0:
        wait = info.reset_after_s if info.reset_after_s is not None else FIRST_PROBE_S
        until = now + timedelta(seconds=min(wait, settings.BFL_RETRY_AFTER_MAX_S))
        if state.rate_limited_until is None or state.rate_limited_until < until:
            state.rate_limited_until = until
            state.active_at_rate_limit = _pending_at_bfl(db) + 1  # + the task just accepted


# --- what people see -------------------------------------------------------------------------


@dataclass(frozen=True)
class AccountStatus:
    """The account's state for pages, the API and /readyz.

    `kind` is "ok", "outage" or "rate_limited"; `since` when it began; `next_try_at` when the
    studio tries BFL next; `waiting` jobs queued; `cap` the effective active-task cap and
    `configured_cap` BFL_MAX_ACTIVE_TASKS; `message` one sentence for people (times in UTC).
    """

    kind: str
    since: datetime | None
    next_try_at: datetime | None
    reason: str | None
    waiting: int
    cap: int
    configured_cap: int
    message: str

    def as_dict(self) -> dict[str, object]:
        return {
            "state": self.kind,
            "since": self.since.isoformat() if self.since else None,
            "next_try_at": self.next_try_at.isoformat() if self.next_try_at else None,
            "reason": self.reason,
            "jobs_waiting": self.waiting,
            "active_task_cap": self.cap,
            "configured_active_task_cap": self.configured_cap,
            "message": self.message,
        }


def _hhmm(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%H:%M UTC")


def _hhmmss(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%H:%M:%S UTC")


def _waiting(count: int) -> str:
    return f"{count} job{'s' if count != 1 else ''} waiting"


def status(db: Session, settings: Settings, now: datetime) -> AccountStatus:
    """What the studio knows of the BFL account right now (read only, no lock)."""
    state = peek(db)
    waiting = db.scalar(select(func.count()).where(Job.status == JobStatus.QUEUED)) or 0
    configured = settings.BFL_MAX_ACTIVE_TASKS
    cap = effective_cap(state, settings, now)
    if state is not None and state.outage_since is not None:
        since = state.outage_since
        message = (
            f"BFL unreachable since {_hhmm(since)} — {_waiting(waiting)}; nothing is sent "
            "or charged until it answers"
        )
        if state.next_probe_at is not None:
            message += f" (next check {_hhmmss(max(state.next_probe_at, now))})"
        return AccountStatus(
            "outage",
            since,
            state.next_probe_at,
            state.outage_reason,
            waiting,
            cap,
            configured,
            message + ".",
        )
    if (
        state is not None
        and state.rate_limited_until is not None
        and state.rate_limited_until > now
    ):
        message = (
            f"BFL's active-task limit is reached — {_waiting(waiting)}; sending resumes when a "
            f"task ends or at {_hhmmss(state.rate_limited_until)}."
        )
        return AccountStatus(
            "rate_limited",
            state.last_rate_limit_at,
            state.rate_limited_until,
            "HTTP 429",
            waiting,
            cap,
            configured,
            message,
        )
    message = "BFL is answering."
    if cap < configured:
        message = (
            f"BFL is answering; its limit for this studio is {cap} active tasks "
            f"(configured {configured}), learned from its 429 answers."
        )
    return AccountStatus("ok", None, None, None, waiting, cap, configured, message)


def next_try_at(job: Job, state: BFLAccountState | None, now: datetime) -> datetime | None:
    """When a queued job will be tried next: its own wait or the account's, whichever is later.

    None for a job that is not queued or may go as soon as a slot is free.
    """
    if job.status != JobStatus.QUEUED:
        return None
    times = [job.not_before] if job.not_before is not None else []
    if state is not None:
        if state.outage_since is not None and state.next_probe_at is not None:
            times.append(state.next_probe_at)
        if state.rate_limited_until is not None:
            times.append(state.rate_limited_until)
    later = max(times, default=None)
    return later if later is not None and later > now else None
