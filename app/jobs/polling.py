"""Polling one pending BFL task when it is due, and when to poll it next."""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

from app.bfl.client import BFLClient, PollResult, TaskStatus
from app.bfl.errors import BFLError
from app.db import session_scope, utcnow
from app.jobs import state
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
from app.jobs.poll_timing import WEBHOOK_GRACE_S as WEBHOOK_GRACE_S
from app.jobs.poll_timing import first_poll_delay as first_poll_delay
from app.jobs.poll_timing import next_poll_delay, observe_run_time, webhooks_enabled
from app.jobs.results import finish_ready
from app.settings import Settings, get_settings

log = logging.getLogger(__name__)


def poll_job(client: BFLClient, job_id: uuid.UUID, *, force: bool = False) -> Outcome:
    """Poll one pending job's BFL task, if its poll is due; finish it when BFL has.

    `force` (a webhook wake-up) polls at once unless another poll is running right now.
    """
    settings = get_settings()
    claimed = _claim_due_poll(job_id, settings, force=force)
    if isinstance(claimed, Outcome):
        return claimed
    polled = claimed
    try:
        result = client.poll(polled.polling_url, polled.bfl_task_id)
    except BFLError as exc:
        # Reads are safe to repeat; a failing BFL is waited out until JOB_MAX_PENDING_S.
        log.warning("poll of job %s failed: %s", polled.id, exc)
        return still_pending(polled.id, _next_delay(polled, settings, None), None)
    return _follow_status(client, polled, result, settings)


def _claim_due_poll(job_id: uuid.UUID, settings: Settings, *, force: bool) -> Polled | Outcome:
    """Take the poll's lease if it is due, in its own short transaction; a job that has crashed
    too many polls or run past JOB_MAX_PENDING_S ends here instead (the Outcome says how)."""
    now = utcnow()
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
    client: BFLClient, polled: Polled, result: PollResult, settings: Settings
) -> Outcome:
    """What BFL's status does to the job: wait more, store the image, or end it."""
    if result.status is TaskStatus.PENDING:
        delay = _next_delay(polled, settings, result.progress)
        return still_pending(polled.id, delay, result.progress)
    if result.status is TaskStatus.READY:
        run_time = _reported_run_time(result)
        if run_time is not None:
            observe_run_time(polled.model, run_time)
        return finish_ready(client, polled, result, settings)
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
