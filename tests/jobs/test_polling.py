"""Polling: each way a BFL task ends becomes a clear state; duplicate polls change nothing."""

from __future__ import annotations

import time
import uuid

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from app.costs.models import Reservation
from app.db import utcnow
from app.emulator import EmulatorServer
from app.jobs import messages, poll_timing, polling, state
from app.jobs.models import Image, JobStatus
from app.settings import get_settings
from tests.factories import make_person
from tests.pipeline_support import (
    WorkerProcess,
    assert_at_most_one_post,
    job_rows,
    posts_per_job,
    queue_jobs,
    wait_for_terminal,
)

pytestmark = pytest.mark.pipeline

FAILURES = [
    ("[[request-moderated]] a cat", JobStatus.MODERATED, "request_moderated", "moderation"),
    ("[[content-moderated]] a cat", JobStatus.MODERATED, "content_moderated", "moderation"),
    ("[[error]] a cat", JobStatus.FAILED, "bfl_error", "failed to generate"),
    ("[[not-found]] a cat", JobStatus.FAILED, "task_not_found", "no longer knows"),
    ("[[drop]] a cat", JobStatus.FAILED, "submission_unknown", "not resent"),
]


def test_every_task_failure_ends_in_a_clear_terminal_state(
    worker: WorkerProcess, emulator: EmulatorServer, committed_db: Session, engine: Engine
) -> None:
    person = make_person(committed_db)
    committed_db.commit()
    jobs = [
        queue_jobs(committed_db, person.user.id, person.team.id, prompt=prompt)[0]
        for prompt, *_ in FAILURES
    ]
    done = wait_for_terminal(engine, [j.id for j in jobs], timeout=30)
    for job, (prompt, status, code, words) in zip(done, FAILURES, strict=True):
        assert (job.status, job.error_code) == (status, code), prompt
        assert words in (job.error_message or ""), job.error_message
        assert job.finished_at is not None
    assert_at_most_one_post(emulator, done)
    # A dropped answer may have been charged: its budget hold stays; the others are released
    # or settled by what BFL reported.
    dropped = done[-1]
    assert committed_db.get(Reservation, dropped.id).state == "held"  # type: ignore[union-attr]


def test_duplicate_messages_are_no_ops(
    worker: WorkerProcess, emulator: EmulatorServer, committed_db: Session, engine: Engine
) -> None:
    person = make_person(committed_db)
    committed_db.commit()
    jobs = queue_jobs(committed_db, person.user.id, person.team.id, prompt="twice", count=2)
    done = wait_for_terminal(engine, [j.id for j in jobs], timeout=30)
    polls_before = {j.id: j.poll_count for j in done}
    # Redeliver everything a finished job ever received: wake-ups and (forced) polls.
    duplicates = [messages.Message(messages.SUBMIT_NEXT, queue=messages.DISPATCH_QUEUE)] * 3
    for job in done:
        duplicates += [messages.poll_message(job.id), messages.poll_message(job.id, force=True)]
    assert messages.send_now(duplicates) == len(duplicates)
    time.sleep(2)
    again = job_rows(engine, [j.id for j in jobs])
    assert [j.status for j in again] == [JobStatus.READY] * 2
    assert {j.id: j.poll_count for j in again} == polls_before
    assert [j.finished_at for j in again] == [j.finished_at for j in done]
    assert committed_db.scalar(select(func.count()).select_from(Image)) == 2
    assert list(posts_per_job(emulator, again).values()) == [1, 1]


def test_unknown_job_id_in_a_poll_is_a_no_op(db: Session) -> None:
    assert state.claim_poll(db, uuid.uuid4(), due_by=utcnow(), lease_until=utcnow()) is None


def test_with_webhooks_a_scheduled_poll_is_a_late_fallback() -> None:
    settings = get_settings().model_copy(
        update={"POLL_MIN_INTERVAL_S": 0.5, "POLL_MAX_INTERVAL_S": 5.0}
    )
    # 2 s into a task at 40 %: BFL predicts 3 s more.
    polled = polling.next_poll_delay(settings, elapsed=2.0, poll_count=1, progress=0.4)
    hooked = polling.next_poll_delay(
        settings, elapsed=2.0, poll_count=1, progress=0.4, webhooks=True
    )
    assert 3.0 <= polled < 3.1
    assert hooked == pytest.approx(3.0 + polling.WEBHOOK_GRACE_S)
    # Without a prediction the fallback waits the longest interval; never longer.
    assert polling.next_poll_delay(
        settings, elapsed=1.0, poll_count=0, progress=None, webhooks=True
    ) == pytest.approx(5.0)
    assert polling.next_poll_delay(
        settings, elapsed=1.0, poll_count=0, progress=0.01, webhooks=True
    ) == pytest.approx(5.0)
    # A finish predicted within the grace is polled just after it, as without webhooks: BFL's
    # call may have come while this poll held the job, and was then not followed.
    near = polling.next_poll_delay(
        settings, elapsed=2.97, poll_count=1, progress=0.99, webhooks=True
    )
    assert near == polling.next_poll_delay(settings, elapsed=2.97, poll_count=1, progress=0.99)
    assert near < polling.WEBHOOK_GRACE_S


def test_the_first_poll_comes_when_the_model_usually_finishes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(poll_timing, "_run_times", {})
    settings = get_settings().model_copy(
        update={"POLL_MIN_INTERVAL_S": 0.5, "POLL_MAX_INTERVAL_S": 5.0, "PUBLIC_URL": None}
    )
    # A model never seen: the configured first interval.
    assert polling.first_poll_delay(settings, "flux-2-pro") == pytest.approx(0.5)
    # Steady 3 s runs (as BFL reports them): just after 3 s, so one poll finds it Ready.
    for _ in range(30):
        polling.observe_run_time("flux-2-pro", 3.0)
    steady = polling.first_poll_delay(settings, "flux-2-pro")
    assert 3.0 < steady < 3.1
    # Runs that vary: early enough that BFL's progress then places the next poll.
    for seconds in (2.0, 4.0) * 15:
        polling.observe_run_time("flux-2-max", seconds)
    varied = polling.first_poll_delay(settings, "flux-2-max")
    assert 0.5 < varied < 2.5
    # Another model's runs teach nothing about this one; absurd reports are ignored.
    polling.observe_run_time("flux-2-flex", -1.0)
    assert polling.first_poll_delay(settings, "flux-2-flex") == pytest.approx(0.5)
    # With webhooks, a predictable finish is still polled at that moment (sooner than BFL's
    # call comes through the web process); otherwise the scheduled poll is only the fallback.
    hooked = settings.model_copy(update={"PUBLIC_URL": "https://studio.example"})
    assert poll_timing.finish_is_predictable("flux-2-pro")
    assert poll_timing.first_poll_is_timed(hooked, "flux-2-pro")
    assert polling.first_poll_delay(hooked, "flux-2-pro") == pytest.approx(steady)
    assert not poll_timing.finish_is_predictable("flux-2-max")
    assert not poll_timing.first_poll_is_timed(hooked, "flux-2-max")
    assert polling.first_poll_delay(hooked, "flux-2-max") == pytest.approx(5.0)
    assert polling.first_poll_delay(hooked, "flux-2-flex") == pytest.approx(5.0)
