"""Results: the image and its thumbnail stored under the team's keys, with seed, cost, timings."""

from __future__ import annotations

import io
from decimal import Decimal

import pytest
from PIL import Image as PILImage
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from app.costs.models import Charge, Reservation
from app.emulator import EmulatorServer
from app.jobs.models import Image, JobStatus
from app.storage import get_storage
from tests.factories import make_person
from tests.pipeline_support import (
    WorkerProcess,
    posts_per_job,
    queue_jobs,
    wait_for_terminal,
)

pytestmark = pytest.mark.pipeline


def test_happy_path_stores_image_thumbnail_seed_cost_and_timings(
    worker: WorkerProcess, emulator: EmulatorServer, committed_db: Session, engine: Engine
) -> None:
    person = make_person(committed_db)
    committed_db.commit()
    jobs = queue_jobs(
        committed_db, person.user.id, person.team.id, prompt="a happy fox", count=2, seed=1234
    )
    done = wait_for_terminal(engine, [j.id for j in jobs], timeout=30)
    assert [j.status for j in done] == [JobStatus.READY, JobStatus.READY]
    storage = get_storage()
    for job in done:
        assert job.result_seed == job.seed
        assert job.cost_credits == Decimal("3.0000")
        assert job.bfl_task_id and job.error_code is None
        assert job.created_at <= job.claimed_at <= job.submitted_at  # type: ignore[operator]
        assert job.submitted_at <= job.bfl_ready_at <= job.finished_at  # type: ignore[operator]
        image = committed_db.scalars(select(Image).where(Image.job_id == job.id)).one()
        assert image.storage_key == f"teams/{person.team.id}/{job.id}/original.jpg"
        assert image.thumb_key == f"teams/{person.team.id}/{job.id}/thumb.webp"
        assert (image.width, image.height, image.content_type) == (256, 256, "image/jpeg")
        original = storage.get(image.storage_key)
        assert len(original) == image.size_bytes
        with PILImage.open(io.BytesIO(storage.get(image.thumb_key))) as thumb:
            assert thumb.format == "WEBP"
        charge = committed_db.scalars(select(Charge).where(Charge.job_id == job.id)).one()
        assert charge.credits == Decimal("3.0000")
        reservation = committed_db.get(Reservation, job.id)
        assert reservation is not None and reservation.state == "settled"
    assert list(posts_per_job(emulator, done).values()) == [1, 1]


def test_a_result_that_expires_before_download_fails_clearly(
    worker: WorkerProcess, emulator: EmulatorServer, committed_db: Session, engine: Engine
) -> None:
    emulator.configure(result_ttl_s=0.001)
    person = make_person(committed_db)
    committed_db.commit()
    (job,) = queue_jobs(committed_db, person.user.id, person.team.id, prompt="too late")
    (done,) = wait_for_terminal(engine, [job.id], timeout=30)
    assert (done.status, done.error_code) == (JobStatus.FAILED, "result_expired")
    assert "expired" in (done.error_message or "")
