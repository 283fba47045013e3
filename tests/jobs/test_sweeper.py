"""The sweeper recovers lost messages and crash loops while a worker runs."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from app.bfl.client import BFLClient
from app.db import utcnow
from app.emulator import EmulatorServer
from app.jobs import messages, outcomes, state, sweeper
from app.jobs.models import Job, JobStatus
from app.jobs.service import create_jobs
from app.settings import EMULATOR_KEY, get_settings
from tests.factories import Person, make_person
from tests.pipeline_support import WorkerProcess, job_rows, queue_jobs, wait_for_terminal

pytestmark = pytest.mark.pipeline


def _posts(emulator: EmulatorServer, prompt: str) -> int:
    return sum(1 for e in emulator.submissions() if e["payload"]["prompt"] == prompt)


def _statuses(engine: Engine, jobs: list[Job]) -> list[str]:
    return [j.status for j in job_rows(engine, [j.id for j in jobs])]


def _orphan(db: Session, person: Person, prompt: str) -> Job:
    """A committed queued job whose wake-up was lost (a crash between COMMIT and publish)."""
    (job,) = queue_jobs(db, person.user.id, person.team.id, prompt=prompt, wake=False)
    return job


def test_sweeper_sends_a_lost_wakeup_for_a_queued_job(
    worker: WorkerProcess, emulator: EmulatorServer, committed_db: Session, engine: Engine
) -> None:
    person = make_person(committed_db)
    committed_db.commit()
    job = _orphan(committed_db, person, "orphan")
    time.sleep(1.0)
    assert _statuses(engine, [job]) == [JobStatus.QUEUED]

    report = sweeper.sweep()
    assert report.dispatch_wakeups == 1
    (done,) = wait_for_terminal(engine, [job.id], timeout=30)
    assert done.status == JobStatus.READY
    assert _posts(emulator, "orphan") == 1


def test_sweeper_restarts_polling_of_a_pending_job_nobody_polls(
    worker: WorkerProcess, emulator: EmulatorServer, committed_db: Session, engine: Engine
) -> None:
    person = make_person(committed_db)
    committed_db.commit()
    job = _orphan(committed_db, person, "unpolled")
    # Submit it here, as a worker would, and lose the poll message that follows.
    assert state.claim(committed_db, job.id) is not None
    committed_db.commit()
    with BFLClient(emulator.base_url, EMULATOR_KEY, allow_insecure_urls=True) as client:
        submission = client.submit("flux-2-pro", job.params)
    state.mark_pending(
        committed_db,
        job.id,
        bfl_task_id=submission.id,
        polling_url=submission.polling_url,
        cost_credits=submission.cost or job.estimated_credits,
        # Due a while ago: its poll message was lost.
        next_poll_at=utcnow() - timedelta(seconds=10),
    )
    messages.discard_pending(committed_db)
    committed_db.commit()
    time.sleep(1.0)
    assert _statuses(engine, [job]) == [JobStatus.PENDING]

    report = sweeper.sweep()
    assert report.polls_restarted == 1
    (done,) = wait_for_terminal(engine, [job.id], timeout=30)
    assert done.status == JobStatus.READY
    assert _posts(emulator, "unpolled") == 1


def test_a_poll_that_keeps_crashing_is_given_up(
    worker: WorkerProcess, emulator: EmulatorServer, committed_db: Session, engine: Engine
) -> None:
    person = make_person(committed_db)
    committed_db.commit()
    job = _orphan(committed_db, person, "crashy")
    state.claim(committed_db, job.id)
    state.mark_pending(
        committed_db,
        job.id,
        bfl_task_id="crashy-task",
        polling_url=None,
        cost_credits=job.estimated_credits,
        next_poll_at=utcnow() - timedelta(seconds=10),
    )
    # Three polls started and never finished (their worker died each time).
    committed_db.execute(
        text("UPDATE jobs SET unfinished_polls = :n WHERE id = :id"),
        {"n": outcomes.MAX_UNFINISHED_POLLS, "id": job.id},
    )
    messages.discard_pending(committed_db)
    committed_db.commit()
    sweeper.sweep()
    (done,) = wait_for_terminal(engine, [job.id], timeout=20)
    assert (done.status, done.error_code) == (JobStatus.FAILED, "worker_crashed")
    assert "given up" in (done.error_message or "")


def test_a_job_pending_too_long_is_timed_out_by_the_sweeper(
    emulator: EmulatorServer, committed_db: Session, engine: Engine
) -> None:
    person = make_person(committed_db)
    committed_db.commit()
    (job,) = create_jobs(
        committed_db,
        user_id=person.user.id,
        team_id=person.team.id,
        model="flux-2-pro",
        params={"prompt": "[[slow]] forever", "width": 256, "height": 256},
    )
    messages.discard_pending(committed_db)
    state.claim(committed_db, job.id)
    state.mark_pending(
        committed_db,
        job.id,
        bfl_task_id="never-finishes",
        polling_url=None,
        cost_credits=job.estimated_credits,
        next_poll_at=utcnow() + timedelta(hours=1),
    )
    messages.discard_pending(committed_db)
    committed_db.commit()
    later = utcnow() + timedelta(seconds=get_settings().JOB_MAX_PENDING_S + 1)
    report = sweeper.sweep(now=later)
    assert report.timed_out == 1
    (done,) = job_rows(engine, [job.id])
    assert (done.status, done.error_code) == (JobStatus.FAILED, "timed_out")
    assert "did not finish within 15 minutes" in (done.error_message or "")
