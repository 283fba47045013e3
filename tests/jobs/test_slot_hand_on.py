"""A slot BFL frees is handed on by the poll that saw it free: released, the next job claimed
and sent, in that poll's own process (no worker runs in this module)."""

from __future__ import annotations

import time
import uuid

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from app.bfl.client import BFLClient
from app.db import utcnow
from app.emulator import EmulatorServer
from app.jobs import dispatch, polling
from app.jobs.models import Job, JobStatus, holds_slot
from app.jobs.outcomes import Outcome
from app.settings import EMULATOR_KEY
from tests.factories import make_person
from tests.pipeline_support import job_rows, posts_per_job, queue_jobs, wait_until

pytestmark = pytest.mark.pipeline


def _one_sent_one_queued(
    client: BFLClient, db: Session, engine: Engine, settings_env: pytest.MonkeyPatch
) -> tuple[Job, uuid.UUID]:
    """Cap 1, two jobs queued, the first sent to BFL: (the sent job's row, the other's id)."""
    settings_env.setenv("BFL_MAX_ACTIVE_TASKS", "1")
    person = make_person(db)
    db.commit()
    jobs = queue_jobs(db, person.user.id, person.team.id, prompt="hand on", count=2)
    assert dispatch.submit_next(client) is Outcome.SUBMITTED
    (first,) = [j for j in job_rows(engine, [j.id for j in jobs]) if j.bfl_task_id]
    (second_id,) = {j.id for j in jobs} - {first.id}
    return first, second_id


def test_the_poll_that_sees_ready_sends_the_next_job_itself(
    emulator: EmulatorServer,
    committed_db: Session,
    engine: Engine,
    settings_env: pytest.MonkeyPatch,
) -> None:
    # Cap 1 and no worker running: the second job can only reach BFL if the poll that saw the
    # first one Ready claims and sends it itself (no wake-up through the broker in between).
    with BFLClient(emulator.base_url, EMULATOR_KEY, allow_insecure_urls=True) as client:
        first, second_id = _one_sent_one_queued(client, committed_db, engine, settings_env)
        assert dispatch.submit_next(client) is Outcome.IDLE  # the cap is full
        wait_until(
            lambda: polling.poll_job(client, first.id) is Outcome.READY, 10, "the first image"
        )
        done, sent = job_rows(engine, [first.id, second_id])
        assert done.status == JobStatus.READY and done.bfl_ready_at is not None
        assert sent.status == JobStatus.PENDING and sent.bfl_task_id is not None
        assert sent.claimed_at is not None and sent.claimed_at >= done.bfl_ready_at
        # A second poll of the same Ready task hands on nothing: its slot was handed on.
        again = dispatch.FreedSlot(first.id, utcnow())
        assert dispatch.submit_next(client, freed=again) is Outcome.SKIPPED
    rows = job_rows(engine, [first.id, second_id])
    assert posts_per_job(emulator, rows) == {first.id: 1, second_id: 1}


def _holding(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(Job).where(holds_slot())) or 0)


def test_a_poll_aimed_at_the_finish_claims_the_next_job_first_and_undoes_it_if_bfl_is_not_done(
    emulator: EmulatorServer,
    committed_db: Session,
    engine: Engine,
    settings_env: pytest.MonkeyPatch,
) -> None:
    emulator.configure(latency_mean_s=1.0, latency_jitter_s=0.0)
    with BFLClient(emulator.base_url, EMULATOR_KEY, allow_insecure_urls=True) as client:
        first, second_id = _one_sent_one_queued(client, committed_db, engine, settings_env)

        # Claimed ahead of the poll: the slot changes hands in the count, never grows.
        taken = dispatch.take_slot_ahead(first.id, utcnow())
        assert [c.id for c in taken] == [second_id]
        assert _holding(engine) == 1
        dispatch.give_back(first.id, taken)
        assert _holding(engine) == 1
        held, back = job_rows(engine, [first.id, second_id])
        assert held.bfl_ready_at is None and back.status == JobStatus.QUEUED
        assert back.claimed_at is None and back.attempts == 0

        # Asked too early: BFL says Pending, so nothing is sent and the claim is undone.
        outcome = polling.poll_job(client, first.id, force=True, at=time.time(), hand_on=True)
        assert outcome is Outcome.STILL_PENDING
        held, back = job_rows(engine, [first.id, second_id])
        assert held.status == JobStatus.PENDING and held.bfl_ready_at is None
        assert back.status == JobStatus.QUEUED and back.bfl_task_id is None
        assert _holding(engine) == 1

        # Asked once BFL is done: the claimed job goes at once, each job POSTed once.
        time.sleep(1.1)
        outcome = polling.poll_job(client, first.id, force=True, at=time.time(), hand_on=True)
        assert outcome is Outcome.READY
        done, sent = job_rows(engine, [first.id, second_id])
        assert done.status == JobStatus.READY and done.bfl_ready_at is not None
        assert sent.status == JobStatus.PENDING and sent.bfl_task_id is not None
        assert sent.attempts == 1
    rows = job_rows(engine, [first.id, second_id])
    assert posts_per_job(emulator, rows) == {first.id: 1, second_id: 1}
