"""How a pipeline step ends: its Outcome, the sentence people read, and the shared endings."""

from __future__ import annotations

import enum
import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy.orm import Session

from app.db import session_scope, utcnow
from app.jobs import messages, state
from app.jobs.models import ACTIVE_STATUSES, Job, JobStatus
from app.settings import Settings

#: A job whose polls crashed (or were killed) this many times in a row is given up.
MAX_UNFINISHED_POLLS = 3
#: Job statuses that hold a slot of the account's active-task cap, in a stable order (for SQL).
ACTIVE_VALUES = tuple(s for s in JobStatus if s in ACTIVE_STATUSES)

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


def credits_text(credits: Decimal) -> str:
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


def deadline_message(settings: Settings, reason: str) -> str:
    limit = settings.QUEUE_DEADLINE_S
    span = (
        f"{limit / 3600:g} hours"
        if limit >= 7200
        else (f"{limit // 60} minutes" if limit >= 120 else f"{limit} seconds")
    )
    return human_message("queue_deadline", span, reason=reason)


@dataclass(frozen=True)
class Polled:
    id: uuid.UUID
    team_id: uuid.UUID
    bfl_task_id: str
    polling_url: str | None
    submitted_at: datetime
    poll_count: int
    model: str = ""


def still_pending(
    job_id: uuid.UUID, delay: float, progress: float | None, *, clean: bool = True
) -> Outcome:
    due = utcnow() + timedelta(seconds=delay)
    with session_scope() as db:
        if not state.reschedule_poll(db, job_id, next_poll_at=due, progress=progress, clean=clean):
            return Outcome.LOST_RACE
        messages.schedule_poll_at(db, job_id, due)
    return Outcome.STILL_PENDING


def fail_pending(
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


def fail_timed_out(db: Session, job_id: uuid.UUID, settings: Settings) -> Job | None:
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
