"""Submitting once: BFL's refusals end or requeue a job as they should, never POSTed twice."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from app.costs.models import Charge, Reservation
from app.emulator import EmulatorServer
from app.jobs.models import JobStatus
from app.jobs.service import create_jobs
from tests.factories import make_person
from tests.pipeline_support import (
    WorkerProcess,
    assert_at_most_one_post,
    queue_jobs,
    wait_for_terminal,
)

pytestmark = pytest.mark.pipeline


@pytest.mark.parametrize(
    ("config", "code", "words"),
    [
        ({"credits": "0"}, "bfl_no_credits", "no credits left"),
        ({"api_key": "another-key"}, "bfl_auth", "ask an admin"),
        ({"error_rate_5xx": 1.0}, "bfl_server_error", "not resent"),
    ],
    ids=["402", "403", "5xx"],
)
def test_account_and_server_refusals_fail_the_job_without_a_second_post(
    worker: WorkerProcess,
    emulator: EmulatorServer,
    committed_db: Session,
    engine: Engine,
    config: dict[str, object],
    code: str,
    words: str,
) -> None:
    emulator.configure(**config)
    person = make_person(committed_db)
    committed_db.commit()
    (job,) = queue_jobs(committed_db, person.user.id, person.team.id, prompt=f"refused {code}")
    (done,) = wait_for_terminal(engine, [job.id], timeout=30)
    assert (done.status, done.error_code) == (JobStatus.FAILED, code)
    assert words in (done.error_message or "")
    assert committed_db.get(Reservation, job.id).state == "released"  # type: ignore[union-attr]
    assert committed_db.scalar(select(func.count()).select_from(Charge)) == 0


def test_a_request_bfl_rejects_fails_with_bfls_reason(
    worker: WorkerProcess, emulator: EmulatorServer, committed_db: Session, engine: Engine
) -> None:
    person = make_person(committed_db)
    committed_db.commit()
    # A request that passed our checks but that BFL refuses (422): simulate a catalogue that
    # is out of date by editing the stored request before the commit sends the wake-up.
    (job,) = create_jobs(
        committed_db,
        user_id=person.user.id,
        team_id=person.team.id,
        model="flux-2-pro",
        params={"prompt": "rejected", "width": 256, "height": 256},
    )
    job.params = {**job.params, "width": 250}
    committed_db.commit()
    (done,) = wait_for_terminal(engine, [job.id], timeout=30)
    assert (done.status, done.error_code) == (JobStatus.FAILED, "bfl_rejected")
    assert "width" in (done.error_message or "")


def test_a_429_requeues_and_the_job_still_finishes_with_one_post(
    worker: WorkerProcess, emulator: EmulatorServer, committed_db: Session, engine: Engine
) -> None:
    # BFL's own cap (1) below the studio's (4): the account is shared with something else.
    emulator.configure(account_active_task_cap=1, latency_mean_s=0.3, latency_jitter_s=0.0)
    person = make_person(committed_db)
    committed_db.commit()
    jobs = queue_jobs(committed_db, person.user.id, person.team.id, prompt="crowded", count=3)
    done = wait_for_terminal(engine, [j.id for j in jobs], timeout=60)
    assert all(j.status == JobStatus.READY for j in done), [j.error_message for j in done]
    assert sum(j.requeues for j in done) >= 1
    assert_at_most_one_post(emulator, done)


def _log_lines(process: WorkerProcess) -> list[dict[str, Any]]:
    lines = []
    for raw in process.log().splitlines():
        if raw.startswith("{"):
            with contextlib.suppress(ValueError):
                lines.append(json.loads(raw))
    return lines


def test_every_line_of_a_submission_carries_its_job_id(
    worker: WorkerProcess, emulator: EmulatorServer, committed_db: Session, engine: Engine
) -> None:
    person = make_person(committed_db)
    committed_db.commit()
    jobs = queue_jobs(committed_db, person.user.id, person.team.id, prompt="logged", count=3)
    done = wait_for_terminal(engine, [j.id for j in jobs], timeout=30)
    assert all(j.status == JobStatus.READY for j in done)
    lines = _log_lines(worker)
    # A job is sent by a wake-up (jobs.submit_next) or, in the slot it freed, by the poll that
    # saw another job Ready (jobs.poll): either way its submission's lines name it.
    submitted_by: dict[str, set[str]] = {}
    for job in done:
        (submitted,) = [e for e in lines if e.get("bfl_task_id") == job.bfl_task_id]
        assert submitted["event"] == "bfl task submitted"
        assert submitted.get("job_id") == str(job.id)
        assert submitted.get("task") in ("jobs.submit_next", "jobs.poll")
        submitted_by.setdefault(submitted["task_id"], set()).add(str(job.id))
        # Celery's own line for that task names the job too: the job sent by a wake-up, the
        # job polled by a poll (named again once the submission it made is over).
        (finished,) = [
            e
            for e in lines
            if e.get("task_id") == submitted["task_id"] and "succeeded" in str(e["event"])
        ]
        if submitted["task"] == "jobs.submit_next":
            assert finished.get("job_id") == str(job.id)
        else:
            assert finished.get("job_id") in {str(j.id) for j in done} - {str(job.id)}
    # A task's lines name only its own jobs: nothing is left over from the task before, and a
    # wake-up sent by the poll that finished job A does not bring A's id to the next wake-up.
    by_task: dict[str, list[dict[str, Any]]] = {}
    for e in lines:
        if e.get("task_id"):
            by_task.setdefault(e["task_id"], []).append(e)
    # (The worker is the module's: its log also holds other tests' jobs.)
    for e in lines:
        if e.get("event") == "bfl task submitted":
            submitted_by.setdefault(e["task_id"], set()).add(e["job_id"])
    idle = 0
    for task_id, task_lines in by_task.items():
        named = {e["job_id"] for e in task_lines if e.get("job_id")}
        sent = submitted_by.get(task_id, set())
        outcome = next(
            (str(e["event"]) for e in task_lines if " succeeded in " in str(e["event"])), ""
        )
        if task_lines[0].get("task") != "jobs.submit_next":
            # A poll names the job it polls, and the job it sent in the freed slot if it did.
            assert len(named - sent) == 1 and len(sent) <= 1, task_lines
        elif outcome.endswith((": 'idle'", ": 'paused'", ": 'probed'")):
            # Nothing claimed: the queue was empty, or the account paused (or probed BFL).
            idle += outcome.endswith(": 'idle'")
            assert named == set(), task_lines
        else:
            # It claimed a job: its lines name that job only (the one it sent, if it did).
            assert len(named) == 1, task_lines
            assert not sent or named == sent, task_lines
    assert idle >= 1, "no wake-up found the queue empty"
