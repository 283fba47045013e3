"""Polling one pending BFL task when it is due, and when to poll it next."""

from __future__ import annotations

import logging
import time
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session

from app.bfl.client import BFLClient, PollResult, TaskStatus
from app.bfl.errors import BFLError
from app.db import session_scope, utcnow
from app.jobs import dispatch, state
from app.jobs.models import JobStatus
from app.jobs.outcomes import (
    MAX_UNFINISHED_POLLS,
    Outcome,
    Polled,
    fail_pending,
    fail_timed_out,
    human_message,
    still_pending,
)
from app.jobs.poll_timing import (
    POLL_LEAD_S,
    next_poll_delay,
    observe_run_time,
    webhooks_enabled,
)
from app.jobs.poll_timing import WEBHOOK_GRACE_S as WEBHOOK_GRACE_S
from app.jobs.poll_timing import first_poll_delay as first_poll_delay
from app.jobs.results import finish_ready
from app.jobs.submission import Claimed
from app.settings import Settings, get_settings

log = logging.getLogger(__name__)


def poll_job(
    client: BFLClient,
    job_id: uuid.UUID,
    *,
    force: bool = False,
    at: float | None = None,
    hand_on: bool = False,
) -> Outcome:
    """Poll one pending job's BFL task, if its poll is due; finish it when BFL has.

    `force` (a webhook wake-up) polls at once unless another poll is running right now.
    `at` (Unix seconds): the moment to ask BFL; a poll delivered ahead of it (POLL_LEAD_S)
    takes its lease, then waits until then. With `hand_on` (the task should be finished by
    `at`) it also claims the next queued job for the task's slot while it waits, and POSTs it
    as soon as BFL reports the task finished; if BFL does not, the claim is undone.
    """
    settings = get_settings()
    claimed = _claim_due_poll(job_id, settings, force=force)
    if isinstance(claimed, Outcome):
        return claimed
    polled = claimed
    taken: list[Claimed] = []
    if at is not None:
        if hand_on:
            taken = dispatch.take_slot_ahead(polled.id, datetime.fromtimestamp(at, UTC))
        # Never longer than the lead (plus a little): a message held up past its moment goes
        # at once, and a clock that jumped cannot park the poll.
        time.sleep(min(max(0.0, at - time.time()), POLL_LEAD_S + 0.02))
    try:
        result = client.poll(polled.polling_url, polled.bfl_task_id)
    except BFLError as exc:
        if taken:
            dispatch.give_back(polled.id, taken)
        # Reads are safe to repeat; a failing BFL is waited out until JOB_MAX_PENDING_S.
        log.warning("poll of job %s failed: %s", polled.id, exc)
        return still_pending(polled.id, _next_delay(polled, settings, None), None)
    except BaseException:
        if taken:
            dispatch.give_back(polled.id, taken)
        raise
    if taken:
        if result.status is TaskStatus.PENDING:
            dispatch.give_back(polled.id, taken)
        else:
            # BFL is done with the task (whatever its outcome): its slot is the claimed job's.
            dispatch.send_taken(client, taken)
    return _follow_status(client, polled, result, settings, slot_handed_on=bool(taken))


def _due_tolerance(settings: Settings, *, force: bool) -> float:
    """How early a poll may take its lease: a forced one (a webhook's) any time no other poll
    holds it; a scheduled one up to its POLL_LEAD_S ahead of its `next_poll_at`."""
    return settings.POLL_MAX_INTERVAL_S + 0.5 if force else POLL_LEAD_S + 0.05


def webhook_poll_needed(db: Session, job_id: uuid.UUID) -> bool:
    """Whether a webhook's poll of the job would run: it is pending and no other poll holds
    its lease (a poll sent for the moment BFL finishes usually got there first)."""
    due_by = utcnow() + timedelta(seconds=_due_tolerance(get_settings(), force=True))
    return state.poll_is_due(db, job_id, due_by=due_by)


def _claim_due_poll(job_id: uuid.UUID, settings: Settings, *, force: bool) -> Polled | Outcome:
    """Take the poll's lease if it is due, in its own short transaction; a job that has crashed
    too many polls or run past JOB_MAX_PENDING_S ends here instead (the Outcome says how)."""
    now = utcnow()
    tolerance = _due_tolerance(settings, force=force)
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
            fail_timed_out(db, job.id, settings)
            return Outcome.FAILED
        return Polled(
            job.id,
            job.team_id,
            job.bfl_task_id or "",
            job.polling_url,
            submitted_at,
            job.poll_count,
            job.model,
        )


def _next_delay(polled: Polled, settings: Settings, progress: float | None) -> float:
    return next_poll_delay(
        settings,
        elapsed=_elapsed(polled),
        poll_count=polled.poll_count,
        progress=progress,
        webhooks=webhooks_enabled(settings),
    )


def _follow_status(
    client: BFLClient,
    polled: Polled,
    result: PollResult,
    settings: Settings,
    *,
    slot_handed_on: bool = False,
) -> Outcome:
    """What BFL's status does to the job: wait more, store the image, or end it."""
    if result.status is TaskStatus.PENDING:
        delay = _next_delay(polled, settings, result.progress)
        return still_pending(polled.id, delay, result.progress)
    if result.status is TaskStatus.READY:
        run_time = _reported_run_time(result)
        if run_time is not None:
            observe_run_time(polled.model, run_time)
        return finish_ready(client, polled, result, settings, slot_handed_on=slot_handed_on)
    if result.status in (TaskStatus.REQUEST_MODERATED, TaskStatus.CONTENT_MODERATED):
        code = (
            "request_moderated"
            if result.status is TaskStatus.REQUEST_MODERATED
            else "content_moderated"
        )
        reasons = list(result.moderation_reasons)
        detail = ", ".join(reasons) or result.explanation or ""
        return fail_pending(
            polled.id,
            code,
            human_message(code, detail),
            JobStatus.MODERATED,
            moderation_reasons=reasons,
        )
    if result.status is TaskStatus.ERROR:
        return fail_pending(
            polled.id, "bfl_error", human_message("bfl_error", result.explanation or "")
        )
    return fail_pending(polled.id, "task_not_found", human_message("task_not_found"))


def _reported_run_time(result: PollResult) -> float | None:
    """Seconds BFL says it spent on the task (`duration`, else `end_time` - `start_time`)."""
    body = result.raw.get("result") if isinstance(result.raw, dict) else None
    if not isinstance(body, dict):
        return None
    values = [body.get(k) for k in ("duration", "start_time", "end_time")]
    duration, start, end = (
        float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None for v in values
    )
    if duration is not None:
        return duration
    return end - start if start is not None and end is not None else None


def _elapsed(polled: Polled) -> float:
    return max(0.0, (utcnow() - polled.submitted_at).total_seconds())
