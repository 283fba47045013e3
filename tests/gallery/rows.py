"""Job and image rows for gallery and prompt tests, written the way the pipeline leaves them."""

from __future__ import annotations

import io
import itertools
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from PIL import Image as PILImage
from sqlalchemy.orm import Session

from app.db import utcnow
from app.jobs.models import Image, Job, JobStatus
from app.storage import get_storage, image_keys
from tests.factories import Person

_seeds = itertools.count(1000)


def add_job(
    db: Session,
    person: Person,
    prompt: str = "a lighthouse at dawn",
    *,
    model: str = "flux-2-pro",
    status: JobStatus = JobStatus.READY,
    created_at: datetime | None = None,
    cost: Decimal | None = Decimal("3"),
    width: int = 1024,
    height: int = 768,
    params: dict[str, Any] | None = None,
) -> Job:
    created = created_at or utcnow()
    seed = next(_seeds)
    job = Job(
        team_id=person.team.id,
        user_id=person.user.id,
        status=status.value,
        model=model,
        prompt=prompt,
        params=params
        or {
            "prompt": prompt,
            "width": width,
            "height": height,
            "seed": seed,
            "safety_tolerance": 2,
            "output_format": "jpeg",
        },
        width=width,
        height=height,
        seed=seed,
        output_format="jpeg",
        estimated_credits=Decimal("3"),
        cost_credits=cost,
        result_seed=seed if status is JobStatus.READY else None,
        created_at=created,
        finished_at=created + timedelta(seconds=4) if status.terminal else None,
        error_code="content_moderated" if status is JobStatus.MODERATED else None,
        error_message="BFL's moderation flagged the result."
        if status is JobStatus.MODERATED
        else None,
    )
    db.add(job)
    db.flush()
    return job


def add_image(db: Session, job: Job, color: str = "teal") -> Image:
    """Store a real JPEG original and WebP thumbnail for the job and record them."""
    original, thumb = image_keys(job.team_id, job.id, "jpg")
    picture = PILImage.new("RGB", (job.width // 8, job.height // 8), color)
    buffer = io.BytesIO()
    picture.save(buffer, "JPEG")
    get_storage().put(original, buffer.getvalue(), "image/jpeg")
    small = io.BytesIO()
    picture.save(small, "WEBP")
    get_storage().put(thumb, small.getvalue(), "image/webp")
    image = Image(
        job_id=job.id,
        team_id=job.team_id,
        storage_key=original,
        thumb_key=thumb,
        content_type="image/jpeg",
        width=job.width,
        height=job.height,
        size_bytes=len(buffer.getvalue()),
    )
    db.add(image)
    db.flush()
    return image
