"""BFL's webhook finishes a job at once; the receiver trusts only its URL token."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session

import app.celery_app as celery_module
from app.bfl.webhooks import sign_webhook_token
from app.db import utcnow
from app.embedded import free_port
from app.emulator import EmulatorServer
from app.jobs import messages, polling, state
from app.jobs.models import JobStatus
from app.jobs.sweeper import OVERDUE_GRACE_S
from app.jobs.webhooks import router
from app.settings import get_settings
from tests.factories import make_person
from tests.pipeline_support import (
    BeatProcess,
    WebProcess,
    WorkerProcess,
    pipeline_env,
    queue_jobs,
    submitting_job,
    wait_for_terminal,
    wait_until,
)


@pytest.fixture
def receiver() -> TestClient:
    app = FastAPI()
    app.include_router(router)
    return TestClient(app)


def test_a_wrong_token_or_id_is_not_found(receiver: TestClient) -> None:
    job_id = str(uuid.uuid4())
    assert receiver.post(f"/bfl/webhook/{job_id}/{'0' * 64}", json={}).status_code == 404
    assert receiver.post("/bfl/webhook/not-a-uuid/abc", json={}).status_code == 404
    other = sign_webhook_token(get_settings().SECRET_KEY.get_secret_value(), str(uuid.uuid4()))
    assert receiver.post(f"/bfl/webhook/{job_id}/{other}", json={}).status_code == 404


def test_a_valid_token_is_accepted_whatever_the_body(receiver: TestClient) -> None:
    job_id = str(uuid.uuid4())
    token = sign_webhook_token(get_settings().SECRET_KEY.get_secret_value(), job_id)
    answer = receiver.post(f"/bfl/webhook/{job_id}/{token}", content=b"not even json")
    assert answer.status_code == 202
    # Only a poll of a job that does not exist was sent: the worker will find nothing to do.


@pytest.mark.pipeline
def test_a_webhook_finishes_the_job_long_before_any_poll_is_due(
    emulator: EmulatorServer, committed_db: Session, engine: Engine
) -> None:
    port = free_port()
    public = f"http://127.0.0.1:{port}"
    # No scheduled poll for a minute: only the webhook can finish the job within the wait.
    env = pipeline_env(
        emulator,
        PUBLIC_URL=public,
        POLL_MIN_INTERVAL_S="60",
        POLL_MAX_INTERVAL_S="60",
        POLL_LEASE_S="120",
    )
    person = make_person(committed_db)
    committed_db.commit()
    with WebProcess(env, port), WorkerProcess(env):
        jobs = queue_jobs(committed_db, person.user.id, person.team.id, prompt="hooked", count=2)
        done = wait_for_terminal(engine, [j.id for j in jobs], timeout=20)
    assert [j.status for j in done] == [JobStatus.READY] * 2
    calls = emulator.service.webhook_log()
    assert len(calls) == 2
    posted = [s["payload"]["webhook_url"] for s in emulator.submissions()]
    for job in done:
        token = sign_webhook_token(get_settings().SECRET_KEY.get_secret_value(), str(job.id))
        assert f"{public}/bfl/webhook/{job.id}/{token}" in posted


@pytest.mark.pipeline
def test_a_webhook_that_never_comes_is_covered_by_the_overdue_check(
    emulator: EmulatorServer, committed_db: Session, engine: Engine
) -> None:
    # PUBLIC_URL names a port nothing listens on: every call BFL makes is lost. No poll
    # message is sent per job with webhooks on, so beat's overdue check (every
    # POLL_MAX_INTERVAL_S) must poll each job once its fallback time has passed.
    env = pipeline_env(
        emulator,
        PUBLIC_URL=f"http://127.0.0.1:{free_port()}",
        POLL_MIN_INTERVAL_S="0.5",
        POLL_MAX_INTERVAL_S="1",
        SWEEP_INTERVAL_S="600",  # the full sweep would find them too; it is not what is tested
    )
    person = make_person(committed_db)
    committed_db.commit()
    with WorkerProcess(env), BeatProcess(env):
        jobs = queue_jobs(committed_db, person.user.id, person.team.id, prompt="unheard", count=3)
        done = wait_for_terminal(engine, [j.id for j in jobs], timeout=40)
    assert [j.status for j in done] == [JobStatus.READY] * 3
    for job in done:
        assert job.submitted_at is not None and job.finished_at is not None
        # One poll each, and not before the fallback time and the grace had passed: nothing
        # but the overdue check polled them (BFL finished each within 0.4 s).
        assert job.poll_count == 1
        waited = (job.finished_at - job.submitted_at).total_seconds()
        assert waited >= 1.0 + OVERDUE_GRACE_S, waited
    assert emulator.service.webhook_log()  # BFL did try to call


@pytest.mark.pipeline
def test_polls_are_taken_before_a_backlog_of_wakeups(emulator: EmulatorServer) -> None:
    # A big batch left wake-ups waiting when webhooks arrive: their polls must not wait for
    # every wake-up to be handled first. Sent before any worker runs, so the order in which
    # one worker takes them shows the queues' priority.
    # Messages earlier tests left behind (this run's queues only) would blur the order.
    celery_module.app.control.purge()
    wakeups = [messages.Message(messages.SUBMIT_NEXT, queue=messages.DISPATCH_QUEUE)] * 12
    polls = [messages.poll_message(uuid.uuid4(), force=True) for _ in range(4)]
    assert messages.send_now(wakeups + polls) == 16
    with WorkerProcess(pipeline_env(emulator), concurrency=1) as worker:
        wait_until(lambda: worker.log().count("] succeeded in") == 16, 30, "all 16 tasks")
        log = worker.log()
    taken = re.findall(r"Task (jobs\.\w+)\[[0-9a-f-]+\] received", log)
    assert taken == [messages.POLL] * 4 + [messages.SUBMIT_NEXT] * 12


def test_no_poll_is_sent_for_a_webhook_while_another_poll_holds_the_job(db: Session) -> None:
    # The poll sent for the moment BFL finishes usually holds the job's lease when BFL's call
    # arrives: that call's poll would do nothing, so the web process does not send it.
    job = submitting_job(db, prompt="a hook")
    now = utcnow()
    assert state.mark_pending(
        db, job.id, bfl_task_id="t", polling_url=None, cost_credits=Decimal("3"), next_poll_at=now
    )
    assert polling.webhook_poll_needed(db, job.id)  # due: BFL's call starts the poll
    lease_until = now + timedelta(seconds=get_settings().POLL_LEASE_S)
    assert state.claim_poll(db, job.id, due_by=now, lease_until=lease_until) is not None
    assert not polling.webhook_poll_needed(db, job.id)  # a poll holds it
    assert not polling.webhook_poll_needed(db, uuid.uuid4())  # no such job
