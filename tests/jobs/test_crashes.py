"""Nothing is lost and nothing is sent twice: killed workers, a flushed Redis, timeouts.

These tests start their own worker processes; no shared worker runs in this module.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

import worker.celery_app as celery_module
from app.db import utcnow
from app.embedded import EmbeddedRedis
from app.emulator import EmulatorServer
from app.jobs import messages, pipeline, state
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
        assert pipeline.sweep().submissions_reconciled == 0
        later = utcnow() + timedelta(seconds=get_settings().SUBMITTING_STALE_S + 1)
        assert pipeline.sweep(now=later).submissions_reconciled == 1
        (done,) = wait_for_terminal(engine, [job.id], timeout=10)
        time.sleep(1.0)
    assert (done.status, done.error_code) == (JobStatus.FAILED, "submission_unknown")
    assert "not resent" in (done.error_message or "")
    assert _posts(emulator, "[[drop]] hang") == 1


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
        bfl_id="never-finishes",
        polling_url=None,
        cost_credits=job.estimated_credits,
        next_poll_at=utcnow() + timedelta(hours=1),
    )
    messages.discard_pending(committed_db)
    committed_db.commit()
    later = utcnow() + timedelta(seconds=get_settings().JOB_MAX_PENDING_S + 1)
    report = pipeline.sweep(now=later)
    assert report.timed_out == 1
    (done,) = job_rows(engine, [job.id])
    assert (done.status, done.error_code) == (JobStatus.FAILED, "timed_out")
    assert "did not finish within 15 minutes" in (done.error_message or "")


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
    env = pipeline_env(emulator, REDIS_URL=private_redis)
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
    assert [j.status for j in done] == [JobStatus.READY] * 12
    assert _posts(emulator, "flushed") == 12
    assert committed_db.scalar(select(Job.id).where(Job.status == "submitting")) is None


def test_a_post_that_never_left_is_requeued_then_sent_once(
    emulator: EmulatorServer, committed_db: Session, engine: Engine
) -> None:
    from app.bfl.client import BFLClient
    from app.embedded import free_port
    from app.settings import EMULATOR_KEY

    person = make_person(committed_db)
    committed_db.commit()
    (job,) = queue_jobs(committed_db, person.user.id, person.team.id, prompt="unreachable")
    # Nothing listens on this port: the connection is refused, so the POST never left.
    with BFLClient(f"http://127.0.0.1:{free_port()}", EMULATOR_KEY, allow_insecure_urls=True) as c:
        assert pipeline.submit_next(c) is pipeline.Outcome.REQUEUED
    (waiting,) = job_rows(engine, [job.id])
    assert (waiting.status, waiting.requeues) == (JobStatus.QUEUED, 1)
    assert waiting.not_before is not None and waiting.claimed_at is None
    assert "could not be reached" in (waiting.error_message or "")

    with BFLClient(emulator.base_url, EMULATOR_KEY, allow_insecure_urls=True) as client:
        # Still backing off: nothing is eligible yet.
        assert pipeline.submit_next(client) is pipeline.Outcome.IDLE
        wait_until(lambda: pipeline.submit_next(client) is pipeline.Outcome.SUBMITTED, 10, "send")
        wait_until(
            lambda: pipeline.poll_job(client, job.id) is pipeline.Outcome.READY, 10, "the image"
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
