"""Migration 0017 gives jobs made before it their reference rows, inline base64 included."""

from __future__ import annotations

import base64
import io
import uuid
from decimal import Decimal

from alembic import command
from PIL import Image as PILImage
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from app.jobs.models import Job, JobReference, ReferenceImage
from app.projects.service import default_project
from app.storage import get_storage
from tests.factories import make_person
from tests.foundation.test_migrations import _config, scratch_url  # noqa: F401 (fixture)


def _png(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    PILImage.new("RGB", (48, 32), colour).save(buffer, "PNG")
    return buffer.getvalue()


def test_inline_references_of_older_jobs_are_stored_and_linked(scratch_url: str) -> None:  # noqa: F811
    config = _config(scratch_url)
    command.upgrade(config, "0015")
    engine = create_engine(scratch_url)
    inline, stored = _png((250, 10, 10)), _png((10, 250, 10))
    try:
        with Session(engine) as db:
            person = make_person(db)
            key = f"teams/{person.team.id}/references/{'a' * 64}.png"
            get_storage().put(key, stored, "image/png")
            job = Job(
                id=uuid.uuid4(),
                team_id=person.team.id,
                user_id=person.user.id,
                project_id=default_project(db, team_id=person.team.id).id,
                status="queued",
                model="flux-2-pro",
                prompt="older",
                params={
                    "prompt": "older",
                    "input_image": base64.b64encode(inline).decode(),
                    "input_image_2": f"stored:{key}",
                    "input_image_3": "https://example.com/a.png",
                },
                width=1024,
                height=1024,
                reference_count=3,
                estimated_credits=Decimal("3"),
            )
            db.add(job)
            db.commit()
            job_id = job.id

        command.upgrade(config, "head")

        with Session(engine) as db:
            job = db.get_one(Job, job_id)
            rows = db.execute(
                select(JobReference.position, ReferenceImage)
                .join(ReferenceImage, ReferenceImage.id == JobReference.reference_id)
                .where(JobReference.job_id == job_id)
                .order_by(JobReference.position)
            ).all()
            assert [position for position, _ in rows] == [1, 2]
            first, second = rows[0][1], rows[1][1]
            assert get_storage().get(first.storage_key) == inline
            assert get_storage().get(second.storage_key) == stored
            assert job.params["input_image"] == f"stored:{first.storage_key}"
            assert job.params["input_image_2"] == f"stored:{second.storage_key}"
            assert job.params["input_image_3"] == "https://example.com/a.png"
    finally:
        engine.dispose()
