"""Sending one claimed job to BFL once, and what BFL's answer (or its absence) does to it.

The POST happens outside any transaction. Its answer is kept in Redis (app.jobs.answers)
before PostgreSQL takes it, so a database outage or a dead worker at that moment cannot lose a
task BFL accepted and charged. A refusal that proves nothing was created requeues the job; any
answer that leaves that in doubt ends it, never re-POSTed.
"""

from __future__ import annotations

import base64
import logging
import random
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session

from app.bfl.client import BFLClient
from app.bfl.errors import (
    AuthFailed,
    BFLError,
    InsufficientCredits,
    NotSent,
    OutcomeUnknown,
    RateLimited,
    RateLimitInfo,
    RequestRejected,
    ServerFailed,
    ServiceUnavailable,
)
from app.bfl.webhooks import sign_webhook_token
from app.db import session_scope, utcnow
from app.jobs import account, answers, messages, state
from app.jobs.models import Job, JobStatus
from app.jobs.outcomes import Outcome, credits_text, deadline_message, human_message
from app.jobs.poll_timing import (
    finish_is_predictable,
    first_poll_delay,
    first_poll_is_timed,
)
from app.jobs.references import STORED_PREFIX
from app.settings import Settings, get_settings
from app.storage import get_storage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Claimed:
    id: uuid.UUID
    team_id: uuid.UUID
    model: str
    params: dict[str, Any]
    estimated_credits: Decimal
    requeues: int
    created_at: datetime


class _ReferenceMissing(Exception):
    pass


def build_payload(claimed: Claimed, settings: Settings) -> dict[str, Any]:
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


def submit_claimed(client: BFLClient, claimed: Claimed, settings: Settings) -> Outcome:
    """POST one claimed job to BFL, once; record BFL's answer, or what its refusal means.

    Never raises for BFL's or the network's failures: every one ends as an Outcome.
    """
    try:
        payload = build_payload(claimed, settings)
    except _ReferenceMissing:
        return _fail_submitting(claimed.id, "reference_missing", human_message("reference_missing"))
    try:
        submission = client.submit(claimed.model, payload)
    except Exception as exc:
        return _after_refusal(claimed, exc, settings)

    if submission.rate_limit is not None:
        _note_rate_limit_headers(submission.rate_limit, settings)
    # BFL reports the cost for FLUX.2; FLUX.1 endpoints do not, so the estimate stands in
    # for it (the catalogue prices them per image, so it is what BFL charges).
    cost = submission.cost if submission.cost is not None else claimed.estimated_credits
    answer = answers.KeptAnswer(submission.id, submission.polling_url, cost, utcnow())
    # From here on the task exists at BFL and is paid for. Keep the answer where neither an
    # unavailable PostgreSQL nor this worker dying can lose it, then write it to PostgreSQL.
    answers.keep(claimed.id, answer)
    return record_acceptance(claimed.id, answer, settings, model=claimed.model)


def _after_refusal(claimed: Claimed, exc: Exception, settings: Settings) -> Outcome:
    """Classify a POST that raised: the refusals that say something of the whole account.

    Called inside the `except` block, so a logged traceback is the submission's own.
    """
    if isinstance(exc, RateLimited):
        # No task was created. BFL's limit is the account's: the whole account pauses.
        return _requeue_rate_limited(claimed, exc, settings)
    if isinstance(exc, NotSent | ServiceUnavailable):
        # No task was created (no connection, or 503: not processed): an outage of the
        # account, waited out until QUEUE_DEADLINE_S; this job goes back to the queue.
        return _requeue_unreachable(claimed, exc, settings)
    if isinstance(exc, OutcomeUnknown):
        # Sent, no answer: this job may be charged, so it ends here. BFL is probably in
        # trouble, so the account pauses too and the jobs behind it wait for a probe.
        return _fail_submitting(
            claimed.id,
            "submission_unknown",
            human_message(
                "submission_unknown",
                _unknown_cause(exc, settings),
                credits=credits_text(claimed.estimated_credits),
            ),
            outage=f"no answer to a submission ({exc.message[:120]})",
        )
    if isinstance(exc, ServerFailed):
        # A 500/502/504 answer to a POST does not prove that no task exists: BFL may have
        # created it and failed afterwards, and a proxy's 502/504 can come after BFL accepted
        # the body. BFL's API docs say retry only if the task surely was not created, and
        # none of these is sure, so the job ends here and the person can retry it in one
        # click. The account pauses, so the jobs behind it do not meet the same fate one by one.
        return _fail_submitting(
            claimed.id,
            "bfl_server_error",
            human_message("bfl_server_error", f"HTTP {exc.status_code}"),
            outage=f"HTTP {exc.status_code} to a submission",
        )
    return _job_refused(claimed, exc)


def _job_refused(claimed: Claimed, exc: Exception) -> Outcome:
    """Classify a POST that raised for this job alone: it ends, and is never re-POSTed."""
    if isinstance(exc, InsufficientCredits):
        return _fail_submitting(claimed.id, "bfl_no_credits", human_message("bfl_no_credits"))
    if isinstance(exc, AuthFailed):
        log.error("BFL refused the API key; jobs will fail until an admin fixes BFL_API_KEY")
        return _fail_submitting(claimed.id, "bfl_auth", human_message("bfl_auth"))
    if isinstance(exc, RequestRejected):
        detail = "; ".join(str(e) for e in exc.field_errors) or exc.message
        return _fail_submitting(claimed.id, "bfl_rejected", human_message("bfl_rejected", detail))
    if isinstance(exc, BFLError):
        # Anything else the client raises for a POST is not a proof that nothing was created.
        code = exc.code if exc.safe_to_retry is False else "submission_unknown"
        return _fail_submitting(
            claimed.id,
            code,
            human_message(code, exc.message, credits=credits_text(claimed.estimated_credits)),
        )
    log.exception("unexpected error submitting job %s", claimed.id)
    return _fail_submitting(
        claimed.id,
        "submission_unknown",
        human_message(
            "submission_unknown",
            f"the studio hit {type(exc).__name__} while waiting",
            credits=credits_text(claimed.estimated_credits),
        ),
    )


def _unknown_cause(exc: BFLError, settings: Settings) -> str:
    """What became of the answer to a POST whose outcome is unknown, in a few plain words."""
    cause = exc.__cause__
    if isinstance(cause, httpx.TimeoutException):
        return f"none within {settings.BFL_TIMEOUT_S:g} s"
    if isinstance(cause, httpx.TransportError):
        return "the connection broke while waiting for it"
    return exc.message


def _backoff(attempts: int, *, base: float, ceiling: float) -> float:
    """Seconds to wait before try `attempts + 1`: doubling from `base` up to `ceiling`, with
    full jitter so many waiting workers do not come back in the same instant."""
    return random.uniform(0.5, 1.0) * min(ceiling, base * 2.0 ** min(attempts, 10))


def apply_answer(
    db: Session,
    job_id: uuid.UUID,
    answer: answers.KeptAnswer,
    *,
    first_poll: float,
    by_webhook: bool = False,
    hand_on: bool = False,
) -> Job | None:
    """submitting → pending with BFL's answer and its one ledger row; the first poll scheduled.

    The same guarded transition for the worker that got the answer and for the sweeper that
    applies a kept copy, so whichever comes second finds the job moved on and changes nothing.
    `by_webhook`: BFL will call our webhook when the task ends, so no poll message is sent;
    `next_poll_at` is then the fallback for a webhook that never comes (see
    sweeper.restart_overdue_polls). `hand_on`: the first poll is aimed at a predictable
    finish, so it claims the next job for the slot ahead of it (see `poll_message`).
    """
    # `first_poll` counts from BFL's answer, not from now: the time spent keeping the answer
    # and writing it here is time the task has already run.
    due = answer.accepted_at + timedelta(seconds=first_poll)
    job = state.mark_pending(
        db,
        job_id,
        bfl_task_id=answer.bfl_task_id,
        polling_url=answer.polling_url,
        cost_credits=answer.cost_credits,
        next_poll_at=due,
        now=answer.accepted_at,
    )
    if job is not None and not by_webhook:
        messages.schedule_poll_at(db, job.id, due, hand_on=hand_on)
    return job


def _database_unavailable(exc: DBAPIError) -> bool:
    """Whether `exc` says PostgreSQL could not be reached (worth waiting for), not a bug."""
    return isinstance(exc, OperationalError | InterfaceError) or exc.connection_invalidated


def record_acceptance(
    job_id: uuid.UUID, answer: answers.KeptAnswer, settings: Settings, *, model: str = ""
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
            outcome = _write_acceptance(job_id, answer, settings, model)
        except DBAPIError as exc:
            if not _database_unavailable(exc):
                raise
            left = deadline - time.monotonic()
            if left <= 0:
                log.error(
                    "PostgreSQL did not take BFL's answer for job %s (task %s) in %d tries; "
                    "the sweeper will apply the copy kept in Redis",
                    job_id,
                    answer.bfl_task_id,
                    tries,
                )
                return Outcome.DEFERRED
            delay = min(left, _backoff(tries - 1, base=0.5, ceiling=15.0))
            log.warning(
                "PostgreSQL did not take BFL's answer for job %s (task %s): %s; "
                "trying again in %.1f s",
                job_id,
                answer.bfl_task_id,
                type(exc.orig or exc).__name__,
                delay,
            )
            time.sleep(delay)
            continue
        if tries > 1:
            log.info(
                "BFL's answer for job %s (task %s) reached PostgreSQL after %d tries",
                job_id,
                answer.bfl_task_id,
                tries,
            )
        return outcome


def _write_acceptance(
    job_id: uuid.UUID, answer: answers.KeptAnswer, settings: Settings, model: str
) -> Outcome:
    with session_scope() as db:
        first_poll = first_poll_delay(settings, model)
        job = apply_answer(
            db,
            job_id,
            answer,
            first_poll=first_poll,
            by_webhook=not first_poll_is_timed(settings, model),
            hand_on=finish_is_predictable(model),
        )
        if job is not None:
            outcome = Outcome.SUBMITTED
        else:
            outcome = Outcome.LOST_RACE
            current = db.get(Job, job_id)
            if current is not None and current.bfl_task_id == answer.bfl_task_id:
                # Applied already: by the sweeper from the kept copy, or by an earlier try
                # whose COMMIT went through before its connection broke (its poll message
                # may then be lost, so one more poll is asked for; a duplicate is a no-op).
                if current.status == JobStatus.PENDING:
                    messages.schedule_poll(db, job_id, first_poll)
            else:
                # The sweeper gave up on this POST before its answer came (it took longer
                # than SUBMITTING_STALE_S) and ended the job submission_unknown. BFL did
                # accept and charge it: keep its id and charge it (settling the budget
                # hold), but do not poll it.
                log.warning(
                    "BFL accepted job %s (task %s) after it was reconciled",
                    job_id,
                    answer.bfl_task_id,
                )
                state.note_late_acceptance(
                    db,
                    job_id,
                    bfl_task_id=answer.bfl_task_id,
                    cost_credits=answer.cost_credits,
                    error_message=human_message(
                        "accepted_late", credits=credits_text(answer.cost_credits)
                    ),
                )
    answers.forget(job_id)
    return outcome


def _note_rate_limit_headers(info: RateLimitInfo, settings: Settings) -> None:
    """X-RateLimit-* on an accepted POST feed the account's limiter (its own transaction, so a
    failure here never loses the accepted task's id, which the next one records)."""
    try:
        with session_scope() as db:
            account.note_rate_limit_headers(db, settings, info, utcnow())
    except Exception:
        log.exception("could not record BFL's rate-limit headers")


def _requeue_unreachable(
    claimed: Claimed, exc: NotSent | ServiceUnavailable, settings: Settings
) -> Outcome:
    reason = f"HTTP {exc.status_code}" if isinstance(exc, ServiceUnavailable) else "no connection"
    now = utcnow()
    with session_scope() as db:
        next_try = account.note_unreachable(db, settings, f"{reason}: {exc.message}", now)
        note = f"Waiting: BFL is unreachable ({reason}); nothing was sent or charged."
        return _requeue(db, claimed, next_try, note, settings, now, reason)


def _requeue_rate_limited(claimed: Claimed, exc: RateLimited, settings: Settings) -> Outcome:
    now = utcnow()
    with session_scope() as db:
        next_try = account.note_rate_limited(db, settings, exc, now)
        note = "Waiting: BFL's active-task limit is reached; sent when a slot frees up."
        return _requeue(db, claimed, next_try, note, settings, now, "BFL's limit was reached")


def _requeue(
    db: Session,
    claimed: Claimed,
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
            error_message=deadline_message(settings, reason),
        )
        return Outcome.FAILED if job is not None else Outcome.LOST_RACE
    job = state.requeue(db, claimed.id, not_before=next_try, error_message=note)
    if job is None:
        return Outcome.LOST_RACE
    # The account's row holds the real time; this wake-up only saves waiting for the sweeper.
    messages.wake_dispatcher(db, countdown=(next_try - now).total_seconds() + 0.05)
    return Outcome.REQUEUED


def _fail_submitting(
    job_id: uuid.UUID, code: str, message: str, *, outage: str | None = None
) -> Outcome:
    with session_scope() as db:
        if outage is not None:
            now = utcnow()
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
