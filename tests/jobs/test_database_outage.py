"""An answer BFL gave is never lost: PostgreSQL down when it arrives, the worker killed meanwhile.

These tests stop PostgreSQL, so they run the studio against a private server of their own
(tests/private_postgres.py); Redis and the emulator are the run's usual ones.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal

import pytest
from sqlalchemy import Engine, create_engine, select
from sqlalchemy.orm import Session

import app.celery_app as celery_module
from app.costs.models import Charge
from app.emulator import EmulatorServer
from app.jobs import answers
from app.jobs.models import Image, Job, JobStatus
from tests.factories import Person, make_person
from tests.pipeline_support import (
    BeatProcess,
    WorkerProcess,
    job_rows,
    pipeline_env,
    queue_jobs,
    wait_for_terminal,
    wait_until,
)
from tests.private_postgres import PrivatePostgres

pytestmark = pytest.mark.pipeline

#: How long PostgreSQL stays away while BFL's answer arrives.
OUTAGE_S = 8.0
#: Logged by a worker each time PostgreSQL refuses BFL's answer.
REFUSED = "did not take BFL's answer"


@dataclass
class Studio:
    """The studio's database on a private server: its URL, an engine, a person owning jobs."""

    pg: PrivatePostgres
    url: str
    engine: Engine
    person: Person

    def queue(self, prompt: str) -> Job:
        with Session(self.engine, expire_on_commit=False) as db:
            (job,) = queue_jobs(db, self.person.user.id, self.person.team.id, prompt=prompt)
        return job

    def charges(self, job_id: uuid.UUID) -> list[Decimal]:
        with Session(self.engine) as db:
            return list(db.scalars(select(Charge.credits).where(Charge.job_id == job_id)))

    def has_image(self, job_id: uuid.UUID) -> bool:
        with Session(self.engine) as db:
            return db.scalar(select(Image.id).where(Image.job_id == job_id)) is not None


@pytest.fixture
def studio() -> Iterator[Studio]:
    # Messages other tests of this run left on its queues would reach this test's worker.
    celery_module.app.control.purge()
    with PrivatePostgres() as pg:
        url = pg.create_database("studio")
        # pre_ping: the connections this engine holds die with each stop of the server.
        engine = create_engine(url, pool_pre_ping=True)
        with Session(engine, expire_on_commit=False) as db:
            person = make_person(db)
            db.commit()
        try:
            yield Studio(pg, url, engine, person)
        finally:
            engine.dispose()


def _kept(job_id: uuid.UUID) -> answers.KeptAnswer | None:
    return answers.find([job_id]).get(job_id)


def test_an_answer_that_arrives_while_postgresql_is_down_is_kept_and_charged_once(
    emulator: EmulatorServer, studio: Studio
) -> None:
    # BFL takes 3 s to answer the POST; PostgreSQL goes away while the answer is on its way.
    emulator.configure(answer_delay_s=3.0, latency_mean_s=0.5, latency_jitter_s=0.1)
    env = pipeline_env(emulator, DATABASE_URL=studio.url)
    with WorkerProcess(env, name="through-outage") as worker:
        job = studio.queue("through an outage")
        wait_until(lambda: len(emulator.submissions()) == 1, 20, "the POST")
        studio.pg.stop()
        stopped = time.monotonic()
        wait_until(lambda: REFUSED in worker.log(), OUTAGE_S, "BFL's answer during the outage")
        # The answer came while the database was away, and is kept until it is back.
        kept = _kept(job.id)
        (task,) = emulator.submissions()
        assert kept is not None and kept.bfl_task_id == task["id"]
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - stopped)))
        studio.pg.start()
        (done,) = wait_for_terminal(studio.engine, [job.id], timeout=60)
        log = worker.log()
    assert (done.status, done.error_code) == (JobStatus.READY, None), done.error_message
    assert done.bfl_task_id == task["id"]
    assert studio.charges(job.id) == [Decimal(str(task["cost"]))]
    assert studio.has_image(job.id)
    assert len(emulator.submissions()) == 1
    assert "reached PostgreSQL after" in log
    assert _kept(job.id) is None  # dropped once PostgreSQL held it


def test_the_sweeper_applies_the_kept_answer_of_a_worker_killed_before_postgresql_took_it(
    emulator: EmulatorServer, studio: Studio
) -> None:
    emulator.configure(answer_delay_s=2.0, latency_mean_s=0.5, latency_jitter_s=0.1)
    # Stale after 5 s: the sweeper would end the job submission_unknown if it only looked
    # at PostgreSQL, which never heard BFL's answer.
    env = pipeline_env(emulator, DATABASE_URL=studio.url, SUBMITTING_STALE_S="5")
    doomed = WorkerProcess(env, name="doomed").start()
    try:
        job = studio.queue("killed before the database took it")
        queued = time.monotonic()
        wait_until(lambda: len(emulator.submissions()) == 1, 20, "the POST")
        studio.pg.stop()
        wait_until(lambda: REFUSED in doomed.log(), 20, "BFL's answer during the outage")
        doomed.kill()
    finally:
        doomed.stop()
    studio.pg.start()
    (task,) = emulator.submissions()
    (waiting,) = job_rows(studio.engine, [job.id])
    assert (waiting.status, waiting.bfl_task_id) == (JobStatus.SUBMITTING, None)
    assert studio.charges(job.id) == []
    assert _kept(job.id) is not None
    time.sleep(max(0.0, 6.0 - (time.monotonic() - queued)))  # now stale for the sweeper

    with BeatProcess(env), WorkerProcess(env, name="successor") as successor:
        (done,) = wait_for_terminal(studio.engine, [job.id], timeout=60)
        log = successor.log()
    assert (done.status, done.error_code) == (JobStatus.READY, None), done.error_message
    assert done.bfl_task_id == task["id"]
    assert studio.charges(job.id) == [Decimal(str(task["cost"]))]
    assert studio.has_image(job.id)
    assert len(emulator.submissions()) == 1
    assert "applied BFL's kept answer" in log
    assert _kept(job.id) is None
