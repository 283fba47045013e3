"""Nothing is lost and nothing is sent twice: killed workers, a flushed Redis, timeouts.

These tests start their own worker processes; no shared worker runs in this module.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
import redis
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

import app.celery_app as celery_module
from app.db import utcnow
from app.embedded import EmbeddedRedis
from app.emulator import EmulatorServer
from app.jobs import dispatch, messages, outcomes, polling, state, sweeper
from app.jobs.models import Job, JobStatus
from app.jobs.service import create_jobs
from app.settings import get_settings
from tests.factories import make_person
from tests.pipeline_support import (
    BeatProcess,
    WorkerProcess,
    job_rows,
    pipeline_env,
    queue_jobs,
    wait_for_terminal,
    wait_until,
)

pytestmark = pytest.mark.pipeline


def _posts(emulator: EmulatorServer, prompt: str) -> int:
    return sum(1 for e in emulator.submissions() if e["payload"]["prompt"] == prompt)


def _statuses(engine: Engine, jobs: list[Job]) -> list[str]:
    return [j.status for j in job_rows(engine, [j.id for j in jobs])]


def test_a_worker_killed_during_the_post_leaves_a_job_that_is_never_sent_again(
    emulator: EmulatorServer, committed_db: Session, engine: Engine
) -> None:
    # BFL accepts the POST but the answer never comes; the worker is killed while waiting.
    emulator.configure(drop_mode="hang", drop_hang_s=30)
    person = make_person(committed_db)
    committed_db.commit()
    env = pipeline_env(emulator)
    with WorkerProcess(env, name="doomed") as doomed:
        (job,) = queue_jobs(committed_db, person.user.id, person.team.id, prompt="[[drop]] hang")
        wait_until(lambda: _posts(emulator, "[[drop]] hang") == 1, 20, "the POST")
        doomed.kill()
    assert _statuses(engine, [job]) == [JobStatus.SUBMITTING]

    with WorkerProcess(env, name="successor"):
        # Not stale yet: the sweeper leaves it alone (the POST might still be answered).
        assert sweeper.sweep().submissions_reconciled == 0
        later = utcnow() + timedelta(seconds=get_settings().SUBMITTING_STALE_S + 1)
        assert sweeper.sweep(now=later).submissions_reconciled == 1
        (done,) = wait_for_terminal(engine, [job.id], timeout=10)
        time.sleep(1.0)
    assert (done.status, done.error_code) == (JobStatus.FAILED, "submission_unknown")
    assert "not resent" in (done.error_message or "")
    assert "No image can arrive for this job; Retry makes a new one." in (done.error_message or "")
    assert _posts(emulator, "[[drop]] hang") == 1


def test_kill_9_of_a_worker_mid_poll_then_a_new_worker_finishes_every_job(
    emulator: EmulatorServer, committed_db: Session, engine: Engine
) -> None:
    emulator.configure(latency_mean_s=2.5, latency_jitter_s=0.5)
    person = make_person(committed_db)
    committed_db.commit()
    env = pipeline_env(emulator)
    with BeatProcess(env):
        with WorkerProcess(env, name="victim") as victim:
            jobs = queue_jobs(
                committed_db, person.user.id, person.team.id, prompt="survivor", count=4
            )
            wait_until(
                lambda: all(s == JobStatus.PENDING for s in _statuses(engine, jobs)),
                20,
                "all jobs pending",
            )
            time.sleep(0.3)  # their polls are scheduled and held by this worker
            victim.kill()
        with WorkerProcess(env, name="rescuer"):
            done = wait_for_terminal(engine, [j.id for j in jobs], timeout=60)
    assert [j.status for j in done] == [JobStatus.READY] * 4
    assert _posts(emulator, "survivor") == 4


@pytest.fixture
def private_redis(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A Redis of this test's own (it gets flushed), used by this process and its children."""
    server = EmbeddedRedis(tmp_path / "redis").start(persist=False)
    monkeypatch.setenv("REDIS_URL", server.url)
    get_settings.cache_clear()
    monkeypatch.setattr(celery_module, "app", celery_module.create_celery())
    try:
        yield server.url
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
        server.stop()


def test_redis_flushed_mid_run_and_worker_restarted_loses_no_job(
    private_redis: str, emulator: EmulatorServer, committed_db: Session, engine: Engine
) -> None:
    emulator.configure(latency_mean_s=0.8, latency_jitter_s=0.3)
    person = make_person(committed_db)
    committed_db.commit()
    # The kill may catch a worker in the middle of a POST: that job must end as
    # submission_unknown (never re-sent), which the sweeper decides after SUBMITTING_STALE_S.
    env = pipeline_env(emulator, REDIS_URL=private_redis, SUBMITTING_STALE_S="5")
    with BeatProcess(env):
        first = WorkerProcess(env, name="before-flush").start()
        try:
            jobs = queue_jobs(
                committed_db, person.user.id, person.team.id, prompt="flushed", count=12
            )
            wait_until(lambda: JobStatus.READY in _statuses(engine, jobs), 30, "the first image")
            redis.Redis.from_url(private_redis).flushall()
            first.kill()
        finally:
            first.stop()
        mid = _statuses(engine, jobs)
        assert any(s != JobStatus.READY for s in mid), "the flush came too late"
        with WorkerProcess(env, name="after-flush"):
            done = wait_for_terminal(engine, [j.id for j in jobs], timeout=90)
    outcomes = [(j.status, j.error_code) for j in done]
    interrupted = outcomes.count((JobStatus.FAILED, "submission_unknown"))
    assert outcomes.count((JobStatus.READY, None)) == 12 - interrupted, outcomes
    assert interrupted <= 2  # at most one POST in flight per pool process of the killed worker
    seeds = [e["payload"].get("seed") for e in emulator.submissions()]
    assert sorted(seeds) == sorted(set(seeds)), "a job was POSTed twice"
    assert len(seeds) >= 12 - interrupted
    assert committed_db.scalar(select(Job.id).where(Job.status == "submitting")) is None


def test_a_post_that_never_left_is_requeued_then_sent_once(
    emulator: EmulatorServer, committed_db: Session, engine: Engine
) -> None:
    from app.bfl.client import BFLClient
    from app.embedded import free_port
    from app.jobs import account
    from app.settings import EMULATOR_KEY

    person = make_person(committed_db)
    committed_db.commit()
    (job,) = queue_jobs(committed_db, person.user.id, person.team.id, prompt="unreachable")
    # Nothing listens on this port: the connection is refused, so the POST never left.
    with BFLClient(f"http://127.0.0.1:{free_port()}", EMULATOR_KEY, allow_insecure_urls=True) as c:
        assert dispatch.submit_next(c) is outcomes.Outcome.REQUEUED
    (waiting,) = job_rows(engine, [job.id])
    assert (waiting.status, waiting.requeues) == (JobStatus.QUEUED, 1)
    assert waiting.not_before is not None and waiting.claimed_at is None
    assert "BFL is unreachable" in (waiting.error_message or "")
    assert "nothing was sent or charged" in (waiting.error_message or "")
    # The outage is the account's: it is recorded once, with the time of the first probe.
    with Session(engine) as db:
        outage = account.peek(db)
        assert outage is not None and outage.outage_since is not None
        assert outage.next_probe_at == waiting.not_before

    with BFLClient(emulator.base_url, EMULATOR_KEY, allow_insecure_urls=True) as client:
        # Before the probe is due nothing is sent, not even the probe.
        assert dispatch.submit_next(client) is outcomes.Outcome.PAUSED
        # Then one dispatcher probes (GET /v1/credits), finds BFL answering and ends the outage.
        wait_until(lambda: dispatch.submit_next(client) is outcomes.Outcome.PROBED, 10, "probe")
        with Session(engine) as db:
            assert account.peek(db).outage_since is None  # type: ignore[union-attr]
        (cleared,) = job_rows(engine, [job.id])
        assert cleared.not_before is None  # the outage's wait is over for every job
        assert dispatch.submit_next(client) is outcomes.Outcome.SUBMITTED
        wait_until(
            lambda: polling.poll_job(client, job.id) is outcomes.Outcome.READY, 10, "the image"
        )
    (done,) = job_rows(engine, [job.id])
    assert done.status == JobStatus.READY and done.error_message is None
    assert _posts(emulator, "unreachable") == 1


def test_the_pipeline_stores_images_in_s3_when_configured(
    emulator: EmulatorServer,
    committed_db: Session,
    engine: Engine,
    settings_env: pytest.MonkeyPatch,
) -> None:
    from moto.server import ThreadedMotoServer

    from app.embedded import free_port
    from app.jobs.models import Image
    from app.storage import S3Storage, get_storage

    port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    s3 = {
        "MEDIA_BACKEND": "s3",
        "S3_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "S3_BUCKET": "studio-images",
        "S3_ACCESS_KEY_ID": "test",
        "S3_SECRET_ACCESS_KEY": "test",
    }
    try:
        for name, value in s3.items():
            settings_env.setenv(name, value)
        get_storage.cache_clear()
        person = make_person(committed_db)
        committed_db.commit()
        with WorkerProcess(pipeline_env(emulator, **s3)):
            (job,) = queue_jobs(committed_db, person.user.id, person.team.id, prompt="in s3")
            (done,) = wait_for_terminal(engine, [job.id], timeout=30)
        assert done.status == JobStatus.READY
        image = committed_db.scalars(select(Image).where(Image.job_id == job.id)).one()
        storage = get_storage()
        assert isinstance(storage, S3Storage)
        assert storage.exists(image.storage_key) and storage.exists(image.thumb_key)
        assert len(storage.get(image.storage_key)) == image.size_bytes
    finally:
        get_storage.cache_clear()
        moto.stop()


class AnswerHeldBack(httpx.BaseTransport):
    """The network between worker and BFL: a POST reaches BFL at once, its answer comes back
    only when `release` is set (a stalled worker or a very slow link)."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.release = threading.Event()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if request.method == "POST":
            response.read()
            assert self.release.wait(30), "the test never released the answer"
        return response

    def close(self) -> None:
        self.inner.close()


@pytest.mark.parametrize(
    ("model", "params"),
    [
        ("flux-2-pro", {"width": 256, "height": 256}),
        # FLUX.1 endpoints report no cost: the estimate is charged instead.
        ("flux-pro-1.1", {"width": 256, "height": 256}),
    ],
)
def test_an_answer_that_comes_after_the_sweeper_gave_up_is_charged_once(
    emulator: EmulatorServer,
    committed_db: Session,
    engine: Engine,
    model: str,
    params: dict[str, int],
) -> None:
    from app.bfl.client import BFLClient
    from app.costs.models import Charge, Reservation
    from app.settings import EMULATOR_KEY

    person = make_person(committed_db)
    committed_db.commit()
    (job,) = create_jobs(
        committed_db,
        user_id=person.user.id,
        team_id=person.team.id,
        model=model,
        params={"prompt": f"late answer {model}", **params},
    )
    messages.discard_pending(committed_db)  # this test submits it itself, no worker runs
    committed_db.commit()
    network = AnswerHeldBack()
    outcome: list[outcomes.Outcome] = []
    with BFLClient(
        emulator.base_url, EMULATOR_KEY, allow_insecure_urls=True, transport=network
    ) as client:
        submitter = threading.Thread(target=lambda: outcome.append(dispatch.submit_next(client)))
        submitter.start()
        try:
            wait_until(lambda: len(emulator.submissions()) == 1, 10, "the POST")
            # BFL has the task; the answer is still on its way when the sweeper gives up.
            later = utcnow() + timedelta(seconds=get_settings().SUBMITTING_STALE_S + 1)
            assert sweeper.sweep(now=later).submissions_reconciled == 1
            (reconciled,) = job_rows(engine, [job.id])
            assert (reconciled.status, reconciled.error_code) == (
                JobStatus.FAILED,
                "submission_unknown",
            )
            assert committed_db.get(Reservation, job.id).state == "held"  # type: ignore[union-attr]
        finally:
            network.release.set()
            submitter.join(30)
    assert outcome == [outcomes.Outcome.LOST_RACE]

    (bfl_task,) = emulator.submissions()
    reported = bfl_task["cost"]
    committed_db.expire_all()
    (done,) = job_rows(engine, [job.id])
    # Still failed (nobody polls it), but with BFL's id and the cost BFL charged.
    assert (done.status, done.error_code) == (JobStatus.FAILED, "submission_unknown")
    assert done.bfl_task_id == bfl_task["id"]
    # The message no longer says that no answer came: it says when it came and what it cost.
    assert done.error_message == (
        f"BFL accepted the request and charged {done.cost_credits.normalize():f} credits, "
        "but its answer came after the studio had stopped waiting for it, so the image was not "
        "fetched. Retry makes a new job."
    )
    expected = Decimal(str(reported)) if model == "flux-2-pro" else job.estimated_credits
    assert done.cost_credits == expected
    charges = committed_db.scalars(select(Charge).where(Charge.job_id == job.id)).all()
    assert [c.credits for c in charges] == [expected]
    reservation = committed_db.get(Reservation, job.id)
    assert reservation is not None and reservation.state == "settled"
    # A second late answer for the same job (a redelivered message) changes nothing.
    assert (
        state.note_late_acceptance(committed_db, job.id, bfl_task_id="again", cost_credits=None)
        is None
    )
    committed_db.rollback()
    assert len(emulator.submissions()) == 1


def test_a_job_bfl_never_finishes_times_out_through_a_running_worker(
    emulator: EmulatorServer, committed_db: Session, engine: Engine
) -> None:
    # [[slow]] makes this task take 100 s at BFL; the studio gives up after 10 s.
    emulator.configure(latency_mean_s=1.0, latency_jitter_s=0.0, slow_factor=100)
    person = make_person(committed_db)
    committed_db.commit()
    env = pipeline_env(emulator, JOB_MAX_PENDING_S="10")
    with WorkerProcess(env, name="patient"):
        (job,) = queue_jobs(
            committed_db, person.user.id, person.team.id, prompt="[[slow]] a glacier"
        )
        (done,) = wait_for_terminal(engine, [job.id], timeout=40)
    assert (done.status, done.error_code) == (JobStatus.FAILED, "timed_out")
    assert done.error_message == "BFL did not finish within 10 seconds; try again."
    assert done.bfl_task_id is not None and done.poll_count >= 2
    assert _posts(emulator, "[[slow]] a glacier") == 1
    # BFL accepted it, so it stays charged.
    from app.costs.models import Reservation

    assert committed_db.get(Reservation, job.id).state == "settled"  # type: ignore[union-attr]
