"""Celery messages of the job pipeline, held by the session and sent only after it commits.

A message is a wake-up, never a record: Postgres says what is due, and the sweeper re-sends
whatever a crash or a flushed Redis lost. Holding messages until COMMIT means a worker never
receives an id whose row it cannot see yet; a rollback drops them.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session

from app import celery_app
from app.db import utcnow

# The task and queue names are defined with the feature's package; re-exported here for the
# modules that send messages.
from app.jobs import DISPATCH_QUEUE as DISPATCH_QUEUE
from app.jobs import MAX_COUNTDOWN_S as MAX_COUNTDOWN_S
from app.jobs import POLL as POLL
from app.jobs import POLL_QUEUE as POLL_QUEUE
from app.jobs import RESTART_OVERDUE_POLLS as RESTART_OVERDUE_POLLS
from app.jobs import SUBMIT_NEXT as SUBMIT_NEXT
from app.jobs import SWEEP as SWEEP
from app.jobs.poll_timing import POLL_LEAD_S
from app.ops.celery_hooks import JOB_ID_HEADER

log = logging.getLogger(__name__)


_OUTBOX = "jobs.outbox"
#: Immediate wake-ups of the dispatcher one commit sends at most (see wake_dispatcher).
MAX_WAKEUPS_PER_COMMIT = 2


@dataclass(frozen=True)
class Message:
    task: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    countdown: float | None = None
    queue: str | None = None


def capped_countdown(countdown: float | None) -> float | None:
    """`countdown` limited to 0..MAX_COUNTDOWN_S seconds (None stays None: at once)."""
    if countdown is None:
        return None
    return min(max(0.0, countdown), MAX_COUNTDOWN_S)


def send_after_commit(db: Session, message: Message) -> None:
    """Hold `message` until `db` commits; a rollback drops it. Countdowns are capped here."""
    if message.countdown is not None and message.countdown != capped_countdown(message.countdown):
        message = replace(message, countdown=capped_countdown(message.countdown))
    db.info.setdefault(_OUTBOX, []).append(message)


def wake_dispatcher(
    db: Session, count: int = 1, countdown: float | None = None, *, burst: bool = False
) -> None:
    """After commit, ask up to `count` workers to submit the next fair job if a slot is free.

    One commit sends at most MAX_WAKEUPS_PER_COMMIT wake-ups for now: a worker that claims a
    job while slots are still free wakes the next ones, so a few chains fill every free slot,
    while one wake-up per queued job (a batch of 200) would bury polls under messages that
    find the cap full. Delayed wake-ups (a back-off ending) are sent as asked, and so are
    `burst` ones: BFL answering again after an outage, when `count` is the free slots and the
    whole queue should go at once.
    """
    if countdown is None and not burst:
        held = sum(
            1 for m in db.info.get(_OUTBOX, ()) if m.task == SUBMIT_NEXT and m.countdown is None
        )
        count = min(count, MAX_WAKEUPS_PER_COMMIT - held)
    for _ in range(max(0, count)):
        send_after_commit(db, Message(SUBMIT_NEXT, countdown=countdown, queue=DISPATCH_QUEUE))


def poll_message(
    job_id: uuid.UUID,
    countdown: float | None = None,
    *,
    force: bool = False,
    at: datetime | None = None,
    hand_on: bool = False,
) -> Message:
    """A poll of the job's BFL task in `countdown` seconds (or now); `force`: even if not due.

    With `at` (the moment the poll should ask BFL), the message is delivered POLL_LEAD_S
    earlier and the poll waits in its worker until `at`: the broker's and the pool's delays
    and the poll's lease then happen before the task finishes at BFL, not after. `hand_on`:
    BFL is expected to have finished by `at`, so the poll claims the next job for the task's
    slot before asking (app.jobs.dispatch.take_slot_ahead).
    """
    kwargs: dict[str, Any] = {"force": force}
    if at is not None:
        countdown = max(0.0, (at - utcnow()).total_seconds() - POLL_LEAD_S) or None
        kwargs["at"] = at.timestamp()
        if hand_on:
            kwargs["hand_on"] = True
    return Message(POLL, args=(str(job_id),), kwargs=kwargs, countdown=countdown, queue=POLL_QUEUE)


def schedule_poll(
    db: Session, job_id: uuid.UUID, countdown: float | None, *, force: bool = False
) -> None:
    """After commit, poll the job's BFL task in `countdown` seconds (or now)."""
    send_after_commit(db, poll_message(job_id, countdown, force=force))


def schedule_poll_at(
    db: Session, job_id: uuid.UUID, at: datetime, *, hand_on: bool = False
) -> None:
    """After commit, poll the job's BFL task at `at` (see `poll_message`)."""
    send_after_commit(db, poll_message(job_id, at=at, hand_on=hand_on))


def pending_messages(db: Session) -> list[Message]:
    """Messages `db` will send when it commits (for tests and logging)."""
    return list(db.info.get(_OUTBOX, ()))


def discard_pending(db: Session) -> list[Message]:
    """Drop the messages `db` holds, as a crash between COMMIT and publishing would."""
    return list(db.info.pop(_OUTBOX, ()))


def send_now(messages: list[Message]) -> int:
    """Publish messages; a broker failure is logged, not raised (the sweeper re-drives).

    Returns how many were published.
    """
    if not messages:
        return 0
    sent = 0
    for message in messages:
        # A wake-up names no job: an empty header keeps the sender's job id (a poll that just
        # freed a slot, say) off the lines of the task that receives it.
        headers = {} if message.args else {JOB_ID_HEADER: ""}
        try:
            # Looked up at each send: a test may swap in an app with another broker.
            celery_app.app.send_task(
                message.task,
                args=list(message.args),
                kwargs=dict(message.kwargs),
                countdown=capped_countdown(message.countdown),
                queue=message.queue,
                headers=headers,
            )
            sent += 1
        except Exception as exc:
            # The row is committed; losing the wake-up only delays the job until the sweeper.
            log.warning("could not publish %s: %s", message.task, exc)
    return sent


@event.listens_for(Session, "after_commit")
def _publish_after_commit(session: Session) -> None:
    messages = session.info.pop(_OUTBOX, None)
    if messages:
        send_now(messages)


@event.listens_for(Session, "after_rollback")
def _drop_after_rollback(session: Session) -> None:
    session.info.pop(_OUTBOX, None)
