"""Reads of jobs: the one team-walled look-up every door uses, the detail view, image files."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import exists, func, select
from sqlalchemy.orm import Session

from app.auth.models import User
from app.jobs.errors import JobNotFound
from app.jobs.models import Favourite, Image, Job, ReferenceImage
from app.jobs.references import is_reference_data, references_of


@dataclass(frozen=True)
class JobDetail:
    """Everything the detail page and the API show about one job."""

    job: Job
    image: Image | None
    author: str
    favourite: bool
    favourite_count: int
    params: dict[str, Any] = field(default_factory=dict)
    #: The job's reference images, position 1 first.
    references: list[ReferenceImage] = field(default_factory=list)

    @property
    def duration_s(self) -> float | None:
        """Seconds from queueing to the end; None while the job is still under way."""
        if self.job.finished_at is None:
            return None
        return (self.job.finished_at - self.job.created_at).total_seconds()

    @property
    def seed(self) -> int | None:
        """The seed BFL used, or the one asked for when BFL did not say."""
        return self.job.result_seed if self.job.result_seed is not None else self.job.seed


@dataclass(frozen=True)
class ImageFile:
    """What serving a stored image needs: its key, type and a friendly download name."""

    key: str
    content_type: str
    filename: str


def team_job(db: Session, *, team_id: uuid.UUID, job_id: uuid.UUID) -> Job:
    """The team's (not deleted) job with this id.

    The one look-up of a job by id: pages, the API and image serving all use it, so another
    team's job, a deleted one and a missing one are refused alike with JobNotFound (404).
    """
    job = db.scalars(
        select(Job).where(Job.id == job_id, Job.team_id == team_id, Job.deleted_at.is_(None))
    ).first()
    if job is None:
        raise JobNotFound()
    return job


def get_detail(
    db: Session, *, team_id: uuid.UUID, job_id: uuid.UUID, viewer_id: uuid.UUID
) -> JobDetail:
    """The detail page's data in one query. Raises JobNotFound outside the team or after delete."""
    favourites = (
        select(func.count())
        .select_from(Favourite)
        .where(Favourite.job_id == Job.id)
        .correlate(Job)
        .scalar_subquery()
    )
    mine = exists().where(Favourite.user_id == viewer_id, Favourite.job_id == Job.id).correlate(Job)
    row = db.execute(
        select(Job, Image, User.name, mine, favourites)
        .join(User, User.id == Job.user_id)
        .outerjoin(Image, Image.job_id == Job.id)
        .where(Job.id == job_id, Job.team_id == team_id, Job.deleted_at.is_(None))
    ).first()
    if row is None:
        raise JobNotFound()
    job, image, author, favourite, count = row
    return JobDetail(
        job=job,
        image=image,
        author=author,
        favourite=bool(favourite),
        favourite_count=int(count or 0),
        params=shown_params(job.params),
        references=references_of(db, team_id=team_id, job_ids=[job.id]).get(job.id, []),
    )


def shown_params(params: dict[str, Any]) -> dict[str, Any]:
    """The request parameters worth showing a person (no prompt, no webhook plumbing)."""
    # The seed has its own line (the one BFL used); the prompt has its own box.
    # Reference images are listed on their own (`references`, as links to thumbnails): their
    # stored keys mean nothing outside, and inline data would weigh down every page and answer.
    hidden = {"prompt", "seed", "webhook_url", "webhook_secret"}
    return {
        k: v
        for k, v in (params or {}).items()
        if k not in hidden and not (k.startswith("input_image") and is_reference_data(v))
    }


def image_file(db: Session, *, team_id: uuid.UUID, job_id: uuid.UUID, variant: str) -> ImageFile:
    """The stored original (`variant` "original") or WebP thumbnail ("thumb") of the team's job.

    Raises JobNotFound for a job outside the team, deleted, or without a stored image.
    """
    row = db.execute(
        select(
            Image.storage_key,
            Image.thumb_key,
            Image.content_type,
            Job.model,
            Job.result_seed,
            Job.seed,
        )
        .join(Job, Job.id == Image.job_id)
        .where(
            Image.job_id == job_id,
            Job.team_id == team_id,
            Image.team_id == team_id,
            Job.deleted_at.is_(None),
        )
    ).first()
    if row is None:
        raise JobNotFound()
    seed = row.result_seed if row.result_seed is not None else row.seed
    stem = f"{row.model}-{seed if seed is not None else 'random'}-{str(job_id)[:8]}"
    if variant == "thumb":
        return ImageFile(
            key=row.thumb_key, content_type="image/webp", filename=f"{stem}-thumb.webp"
        )
    extension = {"image/png": "png", "image/webp": "webp"}.get(row.content_type, "jpg")
    return ImageFile(
        key=row.storage_key, content_type=row.content_type, filename=f"{stem}.{extension}"
    )


def recent_jobs(
    db: Session, *, team_id: uuid.UUID, user_id: uuid.UUID, limit: int = 12
) -> list[Job]:
    """The person's latest `limit` jobs in the team, newest first, for the generate page."""
    return list(
        db.scalars(
            select(Job)
            .where(Job.team_id == team_id, Job.user_id == user_id, Job.deleted_at.is_(None))
            .order_by(Job.created_at.desc(), Job.id.desc())
            .limit(limit)
        )
    )


__all__ = [
    "ImageFile",
    "JobDetail",
    "get_detail",
    "image_file",
    "recent_jobs",
    "shown_params",
    "team_job",
]
