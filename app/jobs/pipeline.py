"""The job pipeline run by workers: claim under the cap, submit once, poll, store, and sweep.

Each step is a short transaction around one state transition; nothing waits on BFL inside a
transaction or a task. The HTTP calls happen between transactions, so a crash leaves a row
the sweeper can read: `submitting` (never re-POSTed: it may have reached BFL), or `pending`
with an overdue `next_poll_at` (polled again). BFL's answer to a POST is kept in Redis before
it is written to PostgreSQL (app.jobs.answers), so a database outage or a dead worker at that
moment cannot lose a task BFL accepted and charged.
"""

from __future__ import annotations

import base64
import enum
import io
import logging
import random
import re
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import redis
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session

from app.bfl.catalogue import UnknownModel, get_model
from app.bfl.client import BFLClient, FetchedImage, PollResult, TaskStatus
from app.bfl.errors import (
    AuthFailed,
    BFLError,
    ImageFetchFailed,
    InsufficientCredits,
    NotSent,
    OutcomeUnknown,
    RateLimited,
    RateLimitInfo,
    RequestRejected,
    ResultUnavailable,
    ServerFailed,
    ServiceUnavailable,
)
from app.bfl.webhooks import sign_webhook_token
from app.db import session_scope, utcnow
from app.jobs import account, answers, messages, state
from app.jobs.models import ACTIVE_STATUSES, BFLAccountState, Image, Job, JobStatus
from app.jobs.service import STORED_PREFIX
from app.ops.logs import bind_context
from app.settings import Settings, get_settings
from app.storage import get_storage, image_keys

log = logging.getLogger(__name__)

#: Key of the transaction-level advisory lock that serializes count-and-claim across workers.
DISPATCH_LOCK_KEY = 0x5F1D_C0DE_0001
#: A job whose polls crashed (or were killed) this many times in a row is given up.
MAX_UNFINISHED_POLLS = 3
#: How late a scheduled poll may be before the sweeper sends it again.
OVERDUE_GRACE_S = 2.0
#: Shortest wait between polls when BFL's progress says the task is about to finish.
_NEAR_FINISH_FLOOR_S = 0.1
#: With webhooks on, how long after BFL's predicted finish the fallback poll comes: the
#: webhook's poll normally gets there first, and a lost webhook costs about this much.
WEBHOOK_GRACE_S = 1.0
#: Thumbnails fit in this square.
THUMB_SIZE = 512
_EXTENSIONS = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp"}
_ACTIVE = tuple(s.value for s in ACTIVE_STATUSES)

#: What people read when a job ends badly, by error code. `{detail}` is BFL's own words (or
#: what happened); a parenthesised part whose value is missing is left out, and BFL words that
#: only repeat the template's are dropped (see human_message).
MESSAGES: dict[str, str] = {
    "bfl_no_credits": "BFL has no credits left on this account; ask an admin to top up.",
    "bfl_auth": "BFL refused the studio's API key; ask an admin to check BFL_API_KEY.",
    "bfl_rejected": "BFL rejected the request: {detail}. Change the settings and try again.",
    "bfl_server_error": (
        "BFL answered the request with a server error ({detail}), so it may have accepted and "
        "charged it all the same; it was not resent, to avoid paying twice. No image can "
        "arrive for this job; Retry makes a new one."
    ),
    "submission_unknown": (
        "The request was sent to BFL but no usable answer came back ({detail}). BFL may have "
        "accepted and charged it (about {credits} credits), so it was not resent, to avoid "
        "paying twice. No image can arrive for this job; Retry makes a new one."
    ),
    "accepted_late": (
        "BFL accepted the request and charged {credits} credits, but its answer came after the "
        "studio had stopped waiting for it, so the image was not fetched. Retry makes a new job."
    ),
    "queue_deadline": (
        "Not sent to BFL within {detail} of being queued ({reason}). It was never sent and "
        "nothing was charged; retry it when BFL is back."
    ),
    "request_moderated": (
        "BFL's moderation refused the prompt or a reference image ({detail}); change them and "
        "try again."
    ),
    "content_moderated": (
        "BFL's moderation withheld the generated image ({detail}); try another prompt or seed."
    ),
    "bfl_error": "BFL failed to generate the image ({detail}); try again.",
    "task_not_found": "BFL no longer knows this task (unknown or expired); try again.",
    "result_expired": "The image expired at BFL before the studio could download it; try again.",
    "image_unreadable": "BFL sent a result that is not a readable image ({detail}); try again.",
    "timed_out": "BFL did not finish within {detail}; try again.",
    "reference_missing": "A reference image of this job is no longer stored; upload it again.",
    "worker_crashed": (
        "Processing this job failed {detail} times in a row ({reason}); it was given up."
    ),
    "bfl_bad_response": "BFL's answer could not be understood ({detail}); try again.",
}

_PLACEHOLDER = re.compile(r"\{(\w+)\}")
# " (… {name} …)" and ": {name}" parts, left out when `name` has no value.
_OPTIONAL_PART = re.compile(r" \([^()]*\{(\w+)\}[^()]*\)|: \{(\w+)\}")
_EMPTY_DETAILS = {"", "no details", "none", "null", "unknown"}


def _words(text: str) -> str:
    return " ".join(re.sub(r"[^\w']+", " ", text.lower()).split())


def _own_words(template: str, detail: str) -> str:
    """`detail` minus what the template already says, so no message repeats itself.

    BFL's texts often restate our sentence ("BFL failed to generate the image: out of
    memory"): a leading restatement is cut, and a detail that adds nothing is dropped.
    """
    text = " ".join(detail.split()).strip().rstrip(".").strip()
    if _words(text) in _EMPTY_DETAILS:
        return ""
    fixed = _PLACEHOLDER.split(template)[0::2]
    lead = fixed[0].rstrip(" (:")
    if lead and text.lower().startswith(lead.lower()):
        text = text[len(lead) :].lstrip(" :;,.-(").rstrip(")").strip()
    if not text or _words(text) in _words(" ".join(fixed)):
        return ""
    return text


def human_message(code: str, detail: str = "", **extra: str) -> str:
    """The sentence people read for error `code`, with BFL's `detail` and `extra` values.

    An unknown code reads as the detail itself. Parts whose value is missing are left out
    rather than shown as "no details".
    """
    template = MESSAGES.get(code)
    if template is None:
        return " ".join(detail.split()) or "The job failed."
    values = {name: " ".join(str(value).split()) for name, value in extra.items()}
    values["detail"] = _own_words(template, detail)

    def drop_if_empty(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return match.group(0) if values.get(name) else ""

    text = _OPTIONAL_PART.sub(drop_if_empty, template)
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1)) or "(not known)", text)


def _unknown_cause(exc: BFLError, settings: Settings) -> str:
    """What became of the answer to a POST whose outcome is unknown, in a few plain words."""
    cause = exc.__cause__
    if isinstance(cause, httpx.TimeoutException):
        return f"none within {settings.BFL_TIMEOUT_S:g} s"
    if isinstance(cause, httpx.TransportError):
        return "the connection broke while waiting for it"
    return exc.message


def _credits_text(credits: Decimal) -> str:
    """Credits as people read them: 3, 4.5, 0.75 (no trailing zeros)."""
    return f"{credits.normalize():f}"


class Outcome(enum.StrEnum):
    """What one task run did; logged and returned by the Celery tasks."""

    IDLE = "idle"  # no slot free or nothing eligible
    SUBMITTED = "submitted"
    REQUEUED = "requeued"
    FAILED = "failed"
    SKIPPED = "skipped"  # the job had moved on, or the poll was not due (duplicate message)
    STILL_PENDING = "still_pending"
    READY = "ready"
    MODERATED = "moderated"
    LOST_RACE = "lost_race"  # another actor finished the transition first
    DEFERRED = "deferred"  # BFL accepted; PostgreSQL did not take it yet: left to the sweeper
    PROBED = "probed"  # checked whether BFL answers again during an outage
    PAUSED = "paused"  # the account is in an outage or rate-limited: nothing may be sent


def _now() -> datetime:
    return utcnow()


# --- claiming under the cap ----------------------------------------------------------------


def model_cap(model: str, account_cap: int) -> int:
    """The active-task cap for one model: the account cap or the catalogue's lower one."""
    try:
        spec = get_model(model)
    except UnknownModel:
        return account_cap
    if spec.active_task_cap is None:
        return account_cap
    return min(account_cap, spec.active_task_cap)


# Fair choice: each user's oldest eligible job; among those, the user with the fewest jobs at
# BFL right now goes first, then the oldest. A 200-image batch then takes turns with a
# teammate's single image instead of going first in full.
_PICK_FAIR = text(
    """
    WITH eligible AS (
        SELECT DISTINCT ON (user_id) id, user_id, created_at
        FROM jobs
        WHERE status = 'queued'
          AND (not_before IS NULL OR not_before <= :now)
          AND NOT (model = ANY(:blocked))
        ORDER BY user_id, created_at, id
    ), load AS (
        SELECT user_id, count(*) AS active
        FROM jobs
        WHERE status IN ('submitting', 'pending')
        GROUP BY user_id
    )
    SELECT e.id
    FROM eligible e LEFT JOIN load l ON l.user_id = e.user_id
    ORDER BY coalesce(l.active, 0), e.created_at, e.id
    LIMIT 1
    """
)


@dataclass
class Dispatch:
    """What one look at the queue decided.

    `job`: claimed (now `submitting`); `room`: another slot is free (with a job), or a slot
    was free but nothing was eligible (without one); `probe`: the account is in an outage and
    this caller holds the lease of its one probe; `retry_at`: the account is closed until then.
    """

    job: Job | None = None
    room: bool = False
    probe: bool = False
    retry_at: datetime | None = None


def dispatch_next(db: Session, settings: Settings, now: datetime) -> Dispatch:
    """Take the fairest eligible queued job if the account and the cap allow.

    The advisory lock is transaction-level: it serializes count-and-claim across every worker
    and is released by the caller's COMMIT, which also makes the claim visible to the next.
    The account's state (app/jobs/account.py) is read under it: during an outage nothing is
    claimed and one caller gets the probe; while BFL's rate limit pauses the account nothing
    is claimed; the cap is min(BFL_MAX_ACTIVE_TASKS, the cap learned from BFL's 429s).
    """
    # A look without the lock first: with the cap full or the account paused there is nothing
    # to do, and the many wake-ups a big batch sends need not wait for the lock one after
    # another. Safe, because a slot freed (or a pause ended) after this read sends a wake-up
    # of its own once its transaction commits, and the sweeper re-drives due probes.
    seen = account.peek(db)
    probe_at = seen.next_probe_at if seen is not None and seen.outage_since else None
    if probe_at is not None and probe_at > now:
        return Dispatch(retry_at=probe_at)
    cap = account.effective_cap(seen, settings, now)
    active_now = db.scalar(select(func.count()).where(Job.status.in_(_ACTIVE))) or 0
    outage = seen is not None and seen.outage_since is not None
    if active_now >= cap and not outage:
        return Dispatch()
    db.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": DISPATCH_LOCK_KEY})
    gate = account.gate(db, settings, now)
    if not gate.open:
        return Dispatch(probe=gate.probe, retry_at=gate.retry_at)
    cap = gate.cap
    rows = db.execute(
        select(Job.model, func.count()).where(Job.status.in_(_ACTIVE)).group_by(Job.model)
    ).all()
    per_model: dict[str, int] = {model: n for model, n in rows}
    active = sum(per_model.values())
    if active >= cap:
        return Dispatch()
    blocked = [m for m, n in per_model.items() if n >= model_cap(m, cap)]
    job_id = db.execute(_PICK_FAIR, {"now": now, "blocked": blocked}).scalar()
    if job_id is None:
        return Dispatch(room=True)  # a slot is free, but nothing may go now
    job = state.claim(db, job_id, now)
    return Dispatch(job=job, room=job is not None and active + 1 < cap)


def claim_next(db: Session, settings: Settings, now: datetime) -> tuple[Job | None, bool]:
    """`dispatch_next` as (job, room): with a job, whether another slot is still free; without
    one, whether a slot was free (so nothing was eligible) rather than the cap being full or
    the account paused."""
    found = dispatch_next(db, settings, now)
    return found.job, found.room


def _earliest_backoff(db: Session) -> datetime | None:
    return db.scalar(
        select(func.min(Job.not_before)).where(
            Job.status == JobStatus.QUEUED.value, Job.not_before.is_not(None)
        )
    )


# --- submitting ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Claimed:
    id: uuid.UUID
    team_id: uuid.UUID
    model: str
    params: dict[str, Any]
    estimated_credits: Decimal
    requeues: int
    created_at: datetime


class _ReferenceMissing(Exception):
    pass


def build_payload(claimed: _Claimed, settings: Settings) -> dict[str, Any]:
    """The body to POST: stored reference images inlined as base64, our webhook URL added."""
    storage = get_storage()
    payload: dict[str, Any] = {}
    for name, value in claimed.params.items():
        if isinstance(value, str) and value.startswith(STORED_PREFIX):
            try:
                data = storage.get(value[len(STORED_PREFIX) :])
            except KeyError:
                raise _ReferenceMissing(name) from None
            payload[name] = base64.b64encode(data).decode("ascii")
        else:
            payload[name] = value
    if settings.PUBLIC_URL:
        token = sign_webhook_token(settings.SECRET_KEY.get_secret_value(), str(claimed.id))
        base = settings.PUBLIC_URL.rstrip("/")
        payload["webhook_url"] = f"{base}/bfl/webhook/{claimed.id}/{token}"
    return payload


def submit_next(client: BFLClient) -> Outcome:
    """Submit the fairest queued job if the account and a slot of the active-task cap allow.

    One wake-up message runs this once; when it claimed a job and room remains, it wakes
    another worker so free slots fill in parallel. During an outage the one worker that gets
    the probe's lease checks BFL instead (see app/jobs/account.py).
    """
    settings = get_settings()
    now = _now()
    with session_scope() as db:
        found = dispatch_next(db, settings, now)
        job = found.job
        if job is None:
            if not found.probe:
                return _nothing_sent(db, found, now)
            # else: the probe's lease commits with this transaction; the probe goes below.
        else:
            if found.room:
                messages.wake_dispatcher(db)
            claimed = _Claimed(
                job.id,
                job.team_id,
                job.model,
                dict(job.params),
                job.estimated_credits,
                job.requeues,
                job.created_at,
            )
    if job is None:
        return _probe(client, settings)
    # Every line of this submission names the job, up to Celery's own "succeeded" line; the
    # task's postrun hook clears the context before the next task (app.ops.celery_hooks).
    bind_context(job_id=claimed.id)
    return _submit_claimed(client, claimed, settings)


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
    now = _now()
    with session_scope() as db:
        over, next_probe = account.record_probe(
            db, settings, answered=answered, reason=reason, now=now
        )
        if over:
            cap = account.effective_cap(account.peek(db), settings, now)
            active = db.scalar(select(func.count()).where(Job.status.in_(_ACTIVE))) or 0
            queued = (
                db.scalar(select(func.count()).where(Job.status == JobStatus.QUEUED.value)) or 0
            )
            messages.wake_dispatcher(db, min(queued, max(cap - active, 0)), burst=True)
        elif next_probe is not None:
            log.info("BFL still unreachable (%s); next probe in %.1f s", reason, _secs(next_probe))
            messages.wake_dispatcher(db, countdown=_secs(next_probe) + 0.05)
    return Outcome.PROBED


def _secs(when: datetime) -> float:
    return max(0.0, (when - _now()).total_seconds())


def _submit_claimed(client: BFLClient, claimed: _Claimed, settings: Settings) -> Outcome:
    try:
        payload = build_payload(claimed, settings)
    except _ReferenceMissing:
        return _fail_submitting(claimed.id, "reference_missing", human_message("reference_missing"))

    try:
        submission = client.submit(claimed.model, payload)
    except RateLimited as exc:
        # No task was created. BFL's limit is the account's: the whole account pauses.
        return _requeue_rate_limited(claimed, exc, settings)
    except (NotSent, ServiceUnavailable) as exc:
        # No task was created (no connection, or 503: not processed): an outage of the
        # account, waited out until QUEUE_DEADLINE_S; this job goes back to the queue.
        return _requeue_unreachable(claimed, exc, settings)
    except OutcomeUnknown as exc:
        # Sent, no answer: this job may be charged, so it ends here. BFL is probably in
        # trouble, so the account pauses too and the jobs behind it wait for a probe.
        return _fail_submitting(
            claimed.id,
            "submission_unknown",
            human_message(
                "submission_unknown",
                _unknown_cause(exc, settings),
                credits=_credits_text(claimed.estimated_credits),
            ),
            outage=f"no answer to a submission ({exc.message[:120]})",
        )
    except ServerFailed as exc:
        # A 500/502/504 answer to a POST does not prove that no task exists: BFL may have
        # created it and failed afterwards, and a proxy's 502/504 can come after BFL accepted
        # the body. bfl-api.md says retry only if the task surely was not created, and none
        # of these is sure, so the job ends here and the person can retry it in one click.
        # The account pauses, so the jobs behind it do not meet the same fate one by one.
        return _fail_submitting(
            claimed.id,
            "bfl_server_error",
            human_message("bfl_server_error", f"HTTP {exc.status_code}"),
            outage=f"HTTP {exc.status_code} to a submission",
        )
    except InsufficientCredits:
        return _fail_submitting(claimed.id, "bfl_no_credits", human_message("bfl_no_credits"))
    except AuthFailed:
        log.error("BFL refused the API key; jobs will fail until an admin fixes BFL_API_KEY")
        return _fail_submitting(claimed.id, "bfl_auth", human_message("bfl_auth"))
    except RequestRejected as exc:
        detail = "; ".join(str(e) for e in exc.field_errors) or exc.message
        return _fail_submitting(claimed.id, "bfl_rejected", human_message("bfl_rejected", detail))
    except BFLError as exc:
        # Anything else the client raises for a POST is not a proof that nothing was created.
        code = exc.code if exc.safe_to_retry is False else "submission_unknown"
        return _fail_submitting(
            claimed.id,
            code,
            human_message(code, exc.message, credits=_credits_text(claimed.estimated_credits)),
        )
    except Exception as exc:
        log.exception("unexpected error submitting job %s", claimed.id)
        return _fail_submitting(
            claimed.id,
            "submission_unknown",
            human_message(
                "submission_unknown",
                f"the studio hit {type(exc).__name__} while waiting",
                credits=_credits_text(claimed.estimated_credits),
            ),
        )

    if submission.rate_limit is not None:
        _note_rate_limit_headers(submission.rate_limit, settings)
    # BFL reports the cost for FLUX.2; FLUX.1 endpoints do not, so the estimate stands in
    # for it (the catalogue prices them per image, so it is what BFL charges).
    cost = submission.cost if submission.cost is not None else claimed.estimated_credits
    answer = answers.KeptAnswer(submission.id, submission.polling_url, cost, _now())
    # From here on the task exists at BFL and is paid for. Keep the answer where neither an
    # unavailable PostgreSQL nor this worker dying can lose it, then write it to PostgreSQL.
    answers.keep(claimed.id, answer)
    return _record_acceptance(claimed.id, answer, settings)


def _backoff(attempts: int, *, base: float, ceiling: float) -> float:
    """Seconds to wait before try `attempts + 1`: doubling from `base` up to `ceiling`, with
    full jitter so many waiting workers do not come back in the same instant."""
    return random.uniform(0.5, 1.0) * min(ceiling, base * 2 ** min(attempts, 10))


def _first_poll_delay(settings: Settings) -> float:
    # With webhooks the first poll is only a fallback for a call that never comes.
    if webhooks_enabled(settings):
        return settings.POLL_MAX_INTERVAL_S
    return settings.POLL_MIN_INTERVAL_S


def _apply_answer(
    db: Session,
    job_id: uuid.UUID,
    answer: answers.KeptAnswer,
    *,
    first_poll: float,
) -> Job | None:
    """submitting → pending with BFL's answer and its one ledger row; the first poll scheduled.

    The same guarded transition for the worker that got the answer and for the sweeper that
    applies a kept copy, so whichever comes second finds the job moved on and changes nothing.
    """
    job = state.mark_pending(
        db,
        job_id,
        bfl_id=answer.bfl_id,
        polling_url=answer.polling_url,
        cost_credits=answer.cost_credits,
        next_poll_at=_now() + timedelta(seconds=first_poll),
        now=answer.accepted_at,
    )
    if job is not None:
        messages.schedule_poll(db, job.id, first_poll or None)
    return job


def _database_unavailable(exc: DBAPIError) -> bool:
    """Whether `exc` says PostgreSQL could not be reached (worth waiting for), not a bug."""
    return isinstance(exc, OperationalError | InterfaceError) or exc.connection_invalidated


def _record_acceptance(
    job_id: uuid.UUID, answer: answers.KeptAnswer, settings: Settings
) -> Outcome:
    """Write BFL's answer to PostgreSQL, retrying with back-off while it is unavailable.

    Retries for up to ANSWER_DB_RETRY_MINUTES; past that (or if this worker dies meanwhile)
    the sweeper applies the copy kept in Redis.
    """
    deadline = time.monotonic() + settings.ANSWER_DB_RETRY_MINUTES * 60
    tries = 0
    while True:
        tries += 1
        try:
            outcome = _write_acceptance(job_id, answer, settings)
        except DBAPIError as exc:
            if not _database_unavailable(exc):
                raise
            left = deadline - time.monotonic()
            if left <= 0:
                log.error(
                    "PostgreSQL did not take BFL's answer for job %s (task %s) in %d tries; "
                    "the sweeper will apply the copy kept in Redis",
                    job_id,
                    answer.bfl_id,
                    tries,
                )
                return Outcome.DEFERRED
            delay = min(left, _backoff(tries - 1, base=0.5, ceiling=15.0))
            log.warning(
                "PostgreSQL did not take BFL's answer for job %s (task %s): %s; "
                "trying again in %.1f s",
                job_id,
                answer.bfl_id,
                type(exc.orig or exc).__name__,
                delay,
            )
            time.sleep(delay)
            continue
        if tries > 1:
            log.info(
                "BFL's answer for job %s (task %s) reached PostgreSQL after %d tries",
                job_id,
                answer.bfl_id,
                tries,
            )
        return outcome


def _write_acceptance(job_id: uuid.UUID, answer: answers.KeptAnswer, settings: Settings) -> Outcome:
    with session_scope() as db:
        first_poll = _first_poll_delay(settings)
        job = _apply_answer(db, job_id, answer, first_poll=first_poll)
        if job is not None:
            outcome = Outcome.SUBMITTED
        else:
            outcome = Outcome.LOST_RACE
            current = db.get(Job, job_id)
            if current is not None and current.bfl_id == answer.bfl_id:
                # Applied already: by the sweeper from the kept copy, or by an earlier try
                # whose COMMIT went through before its connection broke (its poll message
                # may then be lost, so one more poll is asked for; a duplicate is a no-op).
                if current.status == JobStatus.PENDING.value:
                    messages.schedule_poll(db, job_id, first_poll)
            else:
                # The sweeper gave up on this POST before its answer came (it took longer
                # than SUBMITTING_STALE_S) and ended the job submission_unknown. BFL did
                # accept and charge it: keep its id and charge it (settling the budget
                # hold), but do not poll it.
                log.warning(
                    "BFL accepted job %s (task %s) after it was reconciled", job_id, answer.bfl_id
                )
                state.note_late_acceptance(
                    db,
                    job_id,
                    bfl_id=answer.bfl_id,
                    cost_credits=answer.cost_credits,
                    error_message=human_message(
                        "accepted_late", credits=_credits_text(answer.cost_credits)
                    ),
                )
    answers.forget(job_id)
    return outcome


def _note_rate_limit_headers(info: RateLimitInfo, settings: Settings) -> None:
    """X-RateLimit-* on an accepted POST feed the account's limiter (its own transaction, so a
    failure here never loses the accepted task's id, which the next one records)."""
    try:
        with session_scope() as db:
            account.note_rate_limit_headers(db, settings, info, _now())
    except Exception:
        log.exception("could not record BFL's rate-limit headers")


def _requeue_unreachable(
    claimed: _Claimed, exc: NotSent | ServiceUnavailable, settings: Settings
) -> Outcome:
    reason = f"HTTP {exc.status_code}" if isinstance(exc, ServiceUnavailable) else "no connection"
    now = _now()
    with session_scope() as db:
        next_try = account.note_unreachable(db, settings, f"{reason}: {exc.message}", now)
        note = f"Waiting: BFL is unreachable ({reason}); nothing was sent or charged."
        return _requeue(db, claimed, next_try, note, settings, now, reason)


def _requeue_rate_limited(claimed: _Claimed, exc: RateLimited, settings: Settings) -> Outcome:
    now = _now()
    with session_scope() as db:
        next_try = account.note_rate_limited(db, settings, exc, now)
        note = "Waiting: BFL's active-task limit is reached; sent when a slot frees up."
        return _requeue(db, claimed, next_try, note, settings, now, "BFL's limit was reached")


def _requeue(
    db: Session,
    claimed: _Claimed,
    next_try: datetime,
    note: str,
    settings: Settings,
    now: datetime,
    reason: str,
) -> Outcome:
    """submitting → queued, to be tried at `next_try` (the account's time, shown to people);
    a job queued longer than QUEUE_DEADLINE_S ends instead, never sent and never charged."""
    if (now - claimed.created_at).total_seconds() >= settings.QUEUE_DEADLINE_S:
        job = state.finish_unsuccessfully(
            db,
            claimed.id,
            expected=JobStatus.SUBMITTING,
            target=JobStatus.FAILED,
            error_code="queue_deadline",
            error_message=_deadline_message(settings, reason),
        )
        return Outcome.FAILED if job is not None else Outcome.LOST_RACE
    job = state.requeue(db, claimed.id, not_before=next_try, error_message=note)
    if job is None:
        return Outcome.LOST_RACE
    # The account's row holds the real time; this wake-up only saves waiting for the sweeper.
    messages.wake_dispatcher(db, countdown=(next_try - now).total_seconds() + 0.05)
    return Outcome.REQUEUED


def _deadline_message(settings: Settings, reason: str) -> str:
    limit = settings.QUEUE_DEADLINE_S
    span = (
        f"{limit / 3600:g} hours"
        if limit >= 7200
        else (f"{limit // 60} minutes" if limit >= 120 else f"{limit} seconds")
    )
    return human_message("queue_deadline", span, reason=reason)


def _fail_submitting(
    job_id: uuid.UUID, code: str, message: str, *, outage: str | None = None
) -> Outcome:
    with session_scope() as db:
        if outage is not None:
            now = _now()
            next_probe = account.note_unreachable(db, get_settings(), outage, now)
            messages.wake_dispatcher(db, countdown=(next_probe - now).total_seconds() + 0.05)
        job = state.finish_unsuccessfully(
            db,
            job_id,
            expected=JobStatus.SUBMITTING,
            target=JobStatus.FAILED,
            error_code=code,
            error_message=message,
        )
    return Outcome.FAILED if job is not None else Outcome.LOST_RACE


# --- polling ---------------------------------------------------------------------------------


def webhooks_enabled(settings: Settings) -> bool:
    """Whether submissions carry our webhook URL, so BFL calls us when a task ends."""
    return bool(settings.PUBLIC_URL)


def next_poll_delay(
    settings: Settings,
    *,
    elapsed: float,
    poll_count: int,
    progress: float | None,
    webhooks: bool = False,
) -> float:
    """Seconds until the next poll of a task that has run `elapsed` seconds.

    With BFL's progress, aim just after the predicted finish (a little late beats one more
    poll); without it, grow from the minimum but never wait longer than a quarter of the time
    spent so far, so a result waits at most ~25 % of its run time before we see it.

    With `webhooks`, BFL's call starts the poll that finishes the job, and a scheduled poll is
    only the fallback for a call that never comes: it is due WEBHOOK_GRACE_S after the
    predicted finish (or POLL_MAX_INTERVAL_S without a prediction), so it seldom races the
    webhook's poll and the two do not both poll and download every result.
    """
    low, high = (
        settings.POLL_MIN_INTERVAL_S,
        max(settings.POLL_MIN_INTERVAL_S, settings.POLL_MAX_INTERVAL_S),
    )
    remaining: float | None = None
    if progress is not None and 0.0 < progress < 1.0 and elapsed > 0:
        # Progress is a fraction of the run: the rest takes elapsed * (1 - p) / p.
        remaining = elapsed * (1.0 - progress) / progress
    if webhooks:
        if remaining is None:
            return high
        return max(low, min(high, remaining + WEBHOOK_GRACE_S))
    if remaining is not None:
        # Aiming one per cent late absorbs rounding in the reported progress; when the finish
        # is predicted sooner than the usual minimum, poll then (but never in a tight loop).
        return max(min(low, _NEAR_FINISH_FLOOR_S), min(high, remaining * 1.01 + 0.02))
    delay = min(low * 1.5**poll_count, 0.25 * elapsed)
    return max(low, min(high, delay))


@dataclass(frozen=True)
class _Polled:
    id: uuid.UUID
    team_id: uuid.UUID
    bfl_id: str
    polling_url: str | None
    submitted_at: datetime
    poll_count: int


def poll_job(client: BFLClient, job_id: uuid.UUID, *, force: bool = False) -> Outcome:
    """Poll one pending job's BFL task, if its poll is due; finish it when BFL has.

    `force` (a webhook wake-up) polls at once unless another poll is running right now.
    """
    settings = get_settings()
    now = _now()
    tolerance = settings.POLL_MAX_INTERVAL_S + 0.5 if force else 0.05
    with session_scope() as db:
        job = state.claim_poll(
            db,
            job_id,
            due_by=now + timedelta(seconds=tolerance),
            lease_until=now + timedelta(seconds=max(settings.POLL_LEASE_S, tolerance + 1)),
        )
        if job is None:
            return Outcome.SKIPPED
        if job.unfinished_polls > MAX_UNFINISHED_POLLS:
            message = human_message(
                "worker_crashed",
                str(MAX_UNFINISHED_POLLS),
                reason="a poll or download never finished",
            )
            state.finish_unsuccessfully(
                db,
                job.id,
                expected=JobStatus.PENDING,
                target=JobStatus.FAILED,
                error_code="worker_crashed",
                error_message=message,
            )
            return Outcome.FAILED
        submitted_at = job.submitted_at or job.created_at
        if (now - submitted_at).total_seconds() > settings.JOB_MAX_PENDING_S:
            _fail_timed_out(db, job.id, settings)
            return Outcome.FAILED
        polled = _Polled(
            job.id, job.team_id, job.bfl_id or "", job.polling_url, submitted_at, job.poll_count
        )

    try:
        result = client.poll(polled.polling_url, polled.bfl_id)
    except BFLError as exc:
        # Reads are safe to repeat; a failing BFL is waited out until JOB_MAX_PENDING_S.
        log.warning("poll of job %s failed: %s", polled.id, exc)
        delay = next_poll_delay(
            settings,
            elapsed=_elapsed(polled),
            poll_count=polled.poll_count,
            progress=None,
            webhooks=webhooks_enabled(settings),
        )
        return _still_pending(polled.id, delay, None)

    if result.status is TaskStatus.PENDING:
        delay = next_poll_delay(
            settings,
            elapsed=_elapsed(polled),
            poll_count=polled.poll_count,
            progress=result.progress,
            webhooks=webhooks_enabled(settings),
        )
        return _still_pending(polled.id, delay, result.progress)
    if result.status is TaskStatus.READY:
        return _finish_ready(client, polled, result, settings)
    if result.status in (TaskStatus.REQUEST_MODERATED, TaskStatus.CONTENT_MODERATED):
        code = (
            "request_moderated"
            if result.status is TaskStatus.REQUEST_MODERATED
            else "content_moderated"
        )
        reasons = list(result.moderation_reasons)
        detail = ", ".join(reasons) or result.explanation or ""
        return _fail_pending(
            polled.id,
            code,
            human_message(code, detail),
            JobStatus.MODERATED,
            moderation_reasons=reasons,
        )
    if result.status is TaskStatus.ERROR:
        return _fail_pending(
            polled.id, "bfl_error", human_message("bfl_error", result.explanation or "")
        )
    return _fail_pending(polled.id, "task_not_found", human_message("task_not_found"))


def _elapsed(polled: _Polled) -> float:
    return max(0.0, (_now() - polled.submitted_at).total_seconds())


def _still_pending(
    job_id: uuid.UUID, delay: float, progress: float | None, *, clean: bool = True
) -> Outcome:
    with session_scope() as db:
        job = state.reschedule_poll(
            db,
            job_id,
            next_poll_at=_now() + timedelta(seconds=delay),
            progress=progress,
            clean=clean,
        )
        if job is None:
            return Outcome.LOST_RACE
        messages.schedule_poll(db, job_id, delay)
    return Outcome.STILL_PENDING


def _fail_pending(
    job_id: uuid.UUID,
    code: str,
    message: str,
    target: JobStatus = JobStatus.FAILED,
    *,
    moderation_reasons: list[str] | None = None,
) -> Outcome:
    with session_scope() as db:
        job = state.finish_unsuccessfully(
            db,
            job_id,
            expected=JobStatus.PENDING,
            target=target,
            error_code=code,
            error_message=message,
            moderation_reasons=moderation_reasons or None,
        )
    if job is None:
        return Outcome.LOST_RACE
    return Outcome.MODERATED if target is JobStatus.MODERATED else Outcome.FAILED


def _fail_timed_out(db: Session, job_id: uuid.UUID, settings: Settings) -> Job | None:
    limit = settings.JOB_MAX_PENDING_S
    span = f"{limit // 60} minutes" if limit >= 120 else f"{limit} seconds"
    return state.finish_unsuccessfully(
        db,
        job_id,
        expected=JobStatus.PENDING,
        target=JobStatus.FAILED,
        error_code="timed_out",
        error_message=human_message("timed_out", span),
    )


def _ready_time(result: PollResult, fallback: datetime) -> datetime:
    """When BFL finished: the result's end_time if it reports one, else when we saw Ready."""
    body = result.raw.get("result") if isinstance(result.raw, dict) else None
    value = body.get("end_time") if isinstance(body, dict) else None
    try:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return datetime.fromtimestamp(float(value), UTC)
        if isinstance(value, str) and value:
            parsed = datetime.fromisoformat(value)
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    except (ValueError, OverflowError, OSError):
        pass
    return fallback


@dataclass(frozen=True)
class StoredImage:
    storage_key: str
    thumb_key: str
    content_type: str
    width: int
    height: int
    size_bytes: int


class UnreadableImage(Exception):
    pass


def warm_up_imaging() -> None:
    """Load the image codecs a worker process needs, before its first result arrives.

    The first decode and WebP encode in a process load plug-ins and libraries (~75 ms of CPU);
    paid in the first poll, that lands exactly when a batch's first results all arrive.
    """
    from PIL import Image as PILImage

    buffer = io.BytesIO()
    PILImage.new("RGB", (16, 16)).save(buffer, "JPEG")
    with PILImage.open(io.BytesIO(buffer.getvalue())) as image:
        image.draft("RGB", (8, 8))
        image.load()
        image.convert("RGB").save(io.BytesIO(), "WEBP", quality=80, method=2)


def store_image(team_id: uuid.UUID, job_id: uuid.UUID, fetched: FetchedImage) -> StoredImage:
    """Keep the original under our own key and a WebP thumbnail beside it."""
    from PIL import Image as PILImage

    try:
        with PILImage.open(io.BytesIO(fetched.content)) as image:
            width, height = image.size
            # JPEG can decode straight at 1/2, 1/4 or 1/8 scale: several times faster than a
            # full decode followed by a resize, and the thumbnail looks the same.
            image.draft("RGB", (THUMB_SIZE, THUMB_SIZE))
            image.load()
            thumb = image.convert("RGBA" if image.mode in ("RGBA", "LA", "P") else "RGB")
            thumb.thumbnail((THUMB_SIZE, THUMB_SIZE))
            buffer = io.BytesIO()
            thumb.save(buffer, "WEBP", quality=80, method=2)
    except (OSError, ValueError, SyntaxError, PILImage.DecompressionBombError) as exc:
        raise UnreadableImage(f"{type(exc).__name__}: {exc}"[:200]) from exc
    extension = _EXTENSIONS.get(fetched.content_type, "bin")
    original_key, thumb_key = image_keys(team_id, job_id, extension)
    storage = get_storage()
    storage.put(original_key, fetched.content, fetched.content_type)
    storage.put(thumb_key, buffer.getvalue(), "image/webp")
    return StoredImage(
        original_key, thumb_key, fetched.content_type, width, height, len(fetched.content)
    )


def _finish_ready(
    client: BFLClient, polled: _Polled, result: PollResult, settings: Settings
) -> Outcome:
    seen_ready = _now()
    assert result.sample_url is not None
    try:
        fetched = client.fetch_image(result.sample_url)
        stored = store_image(polled.team_id, polled.id, fetched)
    except ResultUnavailable:
        return _fail_pending(polled.id, "result_expired", human_message("result_expired"))
    except UnreadableImage as exc:
        return _fail_pending(
            polled.id, "image_unreadable", human_message("image_unreadable", str(exc))
        )
    except ImageFetchFailed as exc:
        if not exc.safe_to_retry:
            return _fail_pending(polled.id, exc.code, human_message(exc.code, exc.message))
        # The link is valid for minutes: try again soon. `clean=False` keeps counting, so a
        # download that never works ends the job instead of looping.
        log.warning("download for job %s failed: %s", polled.id, exc)
        return _still_pending(polled.id, settings.POLL_MIN_INTERVAL_S, None, clean=False)
    except Exception as exc:
        # Storage down, a bug: retry a few times, then give up (counted by unfinished_polls).
        log.exception("storing the image of job %s failed", polled.id)
        with session_scope() as db:
            job = db.get(Job, polled.id)
            if job is not None and job.unfinished_polls >= MAX_UNFINISHED_POLLS:
                state.finish_unsuccessfully(
                    db,
                    polled.id,
                    expected=JobStatus.PENDING,
                    target=JobStatus.FAILED,
                    error_code="worker_crashed",
                    error_message=human_message(
                        "worker_crashed",
                        str(MAX_UNFINISHED_POLLS),
                        reason=f"storing the image failed: {type(exc).__name__}",
                    ),
                )
                return Outcome.FAILED
        return _still_pending(polled.id, settings.POLL_MIN_INTERVAL_S, None, clean=False)

    with session_scope() as db:
        job = state.mark_ready(
            db,
            polled.id,
            result_seed=result.seed,
            bfl_ready_at=_ready_time(result, seen_ready),
        )
        if job is None:
            # A concurrent poll (webhook plus schedule) finished it; it stored the same bytes
            # under the same keys, so there is nothing to undo.
            return Outcome.LOST_RACE
        db.add(
            Image(
                job_id=job.id,
                team_id=job.team_id,
                storage_key=stored.storage_key,
                thumb_key=stored.thumb_key,
                content_type=stored.content_type,
                width=stored.width,
                height=stored.height,
                size_bytes=stored.size_bytes,
            )
        )
    return Outcome.READY


# --- sweeping --------------------------------------------------------------------------------


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
    now = now or _now()
    report = SweepReport()
    applied: list[uuid.UUID] = []
    with session_scope() as db:
        _reconcile_submitting(db, settings, now, batch, report, applied)

        expired = db.scalars(
            select(Job.id)
            .where(
                Job.status == JobStatus.PENDING.value,
                Job.submitted_at < now - timedelta(seconds=settings.JOB_MAX_PENDING_S),
            )
            .limit(batch)
        ).all()
        for job_id in expired:
            if _fail_timed_out(db, job_id, settings):
                report.timed_out += 1

        overdue = db.scalars(
            select(Job.id)
            .where(
                Job.status == JobStatus.PENDING.value,
                (Job.next_poll_at.is_(None))
                | (Job.next_poll_at < now - timedelta(seconds=OVERDUE_GRACE_S)),
            )
            .order_by(Job.next_poll_at.nulls_first())
            .limit(batch)
        ).all()
        for job_id in overdue:
            messages.schedule_poll(db, job_id, None)
        report.polls_restarted = len(overdue)

        seen = account.peek(db)
        too_old = db.scalars(
            select(Job.id)
            .where(
                Job.status == JobStatus.QUEUED.value,
                Job.created_at < now - timedelta(seconds=settings.QUEUE_DEADLINE_S),
            )
            .limit(batch)
        ).all()
        if too_old:
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
                    error_message=_deadline_message(settings, reason),
                    now=now,
                ):
                    report.queue_expired += 1

        _wake_dispatchers(db, settings, now, seen, report)
    for job_id in applied:
        answers.forget(job_id)
    if answers.journal_path().exists():
        with session_scope() as db:
            outstanding = db.scalars(
                select(Job.id).where(Job.status == JobStatus.SUBMITTING.value)
            ).all()
        answers.prune_journal(outstanding)
    return _logged(report)


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
    active = db.scalar(select(func.count()).where(Job.status.in_(_ACTIVE))) or 0
    eligible = (
        db.scalar(
            select(func.count()).where(
                Job.status == JobStatus.QUEUED.value,
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
        .where(Job.status == JobStatus.SUBMITTING.value)
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
            if _apply_answer(db, row.id, answer, first_poll=0.0) is not None:
                log.info("applied BFL's kept answer to job %s (task %s)", row.id, answer.bfl_id)
                report.answers_applied += 1
                applied.append(row.id)
            continue
        if not complete or row.claimed_at is None or row.claimed_at >= stale_before:
            continue
        message = human_message(
            "submission_unknown",
            f"nothing within {settings.SUBMITTING_STALE_S} s; the worker sending it "
            "may have stopped",
            credits=_credits_text(row.estimated_credits),
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
