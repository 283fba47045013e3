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
from app.jobs.results import finish_ready
from app.settings import Settings, get_settings

log = logging.getLogger(__name__)

#: Shortest wait between polls when BFL's progress says the task is about to finish.
_NEAR_FINISH_FLOOR_S = 0.05
#: How far after BFL's predicted finish a poll is aimed: absorbs the rounding of `progress`.
_FINISH_MARGIN_S = 0.02
#: How much each finished task moves the learned run time of its model (a moving average).
_LEARNING_RATE = 0.2
#: BFL's run time per model as this process saw it: (mean, mean absolute deviation), seconds.
_run_times: dict[str, tuple[float, float]] = {}
#: With webhooks on, how long after BFL's predicted finish the fallback poll comes: the
#: webhook's poll normally gets there first, and a lost webhook costs about this much.
WEBHOOK_GRACE_S = 1.0


def observe_run_time(model: str, seconds: float) -> None:
    """Learn how long BFL takes for `model` from one finished task's run (`seconds`, as BFL
    reported it: a time we measured ourselves includes our own lateness and would drift)."""
    if not 0.0 < seconds < 3600.0:
        return
    seen = _run_times.get(model)
    if seen is None:
        _run_times[model] = (seconds, 0.1 * seconds)
        return
    mean, deviation = seen
    deviation += _LEARNING_RATE * (abs(seconds - mean) - deviation)
    mean += _LEARNING_RATE * (seconds - mean)
    _run_times[model] = (mean, deviation)


def first_poll_delay(settings: Settings, model: str | None = None) -> float:
    """Seconds from BFL accepting a task to its first poll.

    With webhooks it is only the fallback for a call that never comes (POLL_MAX_INTERVAL_S).
    Otherwise it comes when the task is likely done, by the run times BFL reported to this
    process for the model: just after the usual finish when they hardly vary (one poll finds
    it Ready), two deviations before it when they do (that poll's `progress` then places the
    next one just after the finish). POLL_MIN_INTERVAL_S for a model not seen yet.
    """
    if webhooks_enabled(settings):
        return settings.POLL_MAX_INTERVAL_S
    seen = _run_times.get(model or "")
    if seen is None:
        return settings.POLL_MIN_INTERVAL_S
    mean, deviation = seen
    aim = mean - 2.0 * deviation + _FINISH_MARGIN_S
    return max(_NEAR_FINISH_FLOOR_S, min(settings.POLL_MAX_INTERVAL_S, aim))


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
        return max(min(low, _NEAR_FINISH_FLOOR_S), min(high, remaining * 1.01 + _FINISH_MARGIN_S))
    delay = min(low * 1.5**poll_count, 0.25 * elapsed)
    return max(low, min(high, delay))


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
