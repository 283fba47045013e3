"""Response shapes of jobs and their images in the JSON API."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, Field

from app.jobs.models import Image, Job, JobStatus, ReferenceImage
from app.jobs.queries import shown_params
from app.timestamps import UtcDatetime

#: Credits are stored with four decimals; a just-created row must read as a re-read one does.
_CREDIT_PLACES = Decimal("0.0001")


def _credits(value: Decimal) -> Decimal:
    return Decimal(value).quantize(_CREDIT_PLACES)


class ImageOut(BaseModel):
    """The stored result of a ready job. An image is named by its job's id (one job, one image)."""

    job_id: uuid.UUID
    content_type: str = Field(description="image/jpeg, image/png or image/webp.")
    width: int
    height: int
    size_bytes: int
    created_at: UtcDatetime
    original_url: str = Field(description="Path of the original file under this API.")
    thumbnail_url: str = Field(description="Path of the WebP thumbnail under this API.")

    @classmethod
    def of(cls, image: Image) -> ImageOut:
        base = f"/api/v1/images/{image.job_id}"
        return cls(
            job_id=image.job_id,
            content_type=image.content_type,
            width=image.width,
            height=image.height,
            size_bytes=image.size_bytes,
            created_at=image.created_at,
            original_url=f"{base}/original",
            thumbnail_url=f"{base}/thumbnail",
        )


class ReferenceOut(BaseModel):
    """One reference image of a job, by link: its bytes are never inlined in an answer."""

    position: int = Field(description="1 for input_image, 2 for input_image_2, ...")
    url: str = Field(description="Path of the stored image under this API.")
    thumbnail_url: str = Field(description="Path of its WebP thumbnail under this API.")
    width: int = Field(description="Pixels, after EXIF orientation and any downscaling.")
    height: int
    sha256: str = Field(description="sha256 of the stored (normalised) bytes, hex.")

    @classmethod
    def of(cls, position: int, ref: ReferenceImage) -> ReferenceOut:
        """The API view of `ref` at `position` (1-based)."""
        base = f"/api/v1/references/{ref.sha256}"
        return cls(
            position=position,
            url=base,
            thumbnail_url=f"{base}/thumbnail",
            width=ref.width,
            height=ref.height,
            sha256=ref.sha256,
        )


class JobOut(BaseModel):
    """One requested image and where it is in its life (queued → ... → ready or failed)."""

    id: uuid.UUID
    status: JobStatus
    model: str
    prompt: str
    params: dict[str, Any] = Field(
        description="The validated request parameters (without prompt and webhook plumbing)."
    )
    width: int
    height: int
    seed: int | None = Field(description="The seed asked for.")
    result_seed: int | None = Field(description="The seed BFL reports it used.")
    output_format: str
    reference_count: int
    references: list[ReferenceOut] = Field(
        default_factory=list,
        description="The job's stored reference images, position 1 first (https URLs sent "
        "as references stay in params).",
    )
    batch_id: uuid.UUID | None
    batch_index: int
    retry_of_id: uuid.UUID | None
    user_id: uuid.UUID
    project_id: uuid.UUID = Field(description="The team's project the job is paid from.")
    author: str | None = Field(description="Name of the person who queued the job.")
    favourite: bool = Field(description="Whether the caller marked this job as a favourite.")
    estimated_credits: Decimal
    cost_credits: Decimal | None = Field(description="The cost BFL reported; null until known.")
    progress: float | None
    error_code: str | None
    error_message: str | None
    moderation_reasons: list[str] = Field(
        default_factory=list,
        description="For a moderated job, the filters BFL named (its 'Moderation Reasons'), "
        'e.g. "Derivative Works Filter"; empty otherwise.',
    )
    next_try_at: UtcDatetime | None = Field(
        default=None,
        description="For a queued job waiting out a BFL outage or rate limit: when the studio "
        "tries it next (UTC). Null when it goes as soon as a slot is free.",
    )
    created_at: UtcDatetime
    submitted_at: UtcDatetime | None
    finished_at: UtcDatetime | None
    deleted_at: UtcDatetime | None = Field(
        default=None,
        description="When the job was deleted: set only in the answer to DELETE, since a "
        "deleted job is not found afterwards.",
    )
    image: ImageOut | None

    @classmethod
    def of(
        cls,
        job: Job,
        *,
        image: Image | None = None,
        author: str | None = None,
        favourite: bool = False,
        next_try_at: datetime | None = None,
        references: Sequence[ReferenceImage] = (),
    ) -> JobOut:
        return cls(
            id=job.id,
            status=job.status,
            model=job.model,
            prompt=job.prompt,
            params=shown_params(job.params),
            width=job.width,
            height=job.height,
            seed=job.seed,
            result_seed=job.result_seed,
            output_format=job.output_format,
            reference_count=job.reference_count,
            references=[ReferenceOut.of(i, ref) for i, ref in enumerate(references, start=1)],
            batch_id=job.batch_id,
            batch_index=job.batch_index,
            retry_of_id=job.retry_of_id,
            user_id=job.user_id,
            project_id=job.project_id,
            author=author,
            favourite=favourite,
            estimated_credits=_credits(job.estimated_credits),
            cost_credits=None if job.cost_credits is None else _credits(job.cost_credits),
            progress=job.progress,
            error_code=job.error_code,
            error_message=job.error_message,
            moderation_reasons=list(job.moderation_reasons or []),
            next_try_at=next_try_at,
            created_at=job.created_at,
            submitted_at=job.submitted_at,
            finished_at=job.finished_at,
            deleted_at=job.deleted_at,
            image=ImageOut.of(image) if image is not None else None,
        )


class JobBatchOut(BaseModel):
    """The jobs one request queued (a batch of `count`, or one retry)."""

    jobs: list[JobOut]
    replayed: bool = Field(
        default=False,
        description="True when an Idempotency-Key matched an earlier request: these are the "
        "jobs it created, and nothing new was queued or charged.",
    )


class JobPage(BaseModel):
    """One page of jobs, newest first."""

    items: list[JobOut]
    next_cursor: str | None = Field(
        description="Pass as `cursor` to get the next page; null on the last page."
    )


__all__ = ["ImageOut", "JobBatchOut", "JobOut", "JobPage"]
