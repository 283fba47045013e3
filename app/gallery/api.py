"""JSON API for the gallery: image metadata and files, and the team's shared prompt history."""

from __future__ import annotations

import re
import uuid
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from app.api.schemas import ImageOut
from app.auth.deps import CurrentActor
from app.deps import SessionDep
from app.errors import FieldProblem, StudioError, error_responses
from app.gallery.service import MAX_PAGE_SIZE, get_detail, image_file, shown_params, team_job
from app.prompts.service import prompt_history
from app.recipes.service import original_download
from app.storage import ObjectMissing, StorageError, get_storage
from app.timestamps import UtcDatetime

router = APIRouter()

NO_NUL = r"^[^\x00]*$"
_IMAGE_TYPES = ("image/jpeg", "image/png", "image/webp")
_BINARY = {"schema": {"type": "string", "format": "binary"}}
_PROMPT_CURSOR_RE = re.compile(r"p(\d{1,9})")


# --- images ------------------------------------------------------------------------------


@router.get(
    "/images/{job_id}",
    response_model=ImageOut,
    tags=["images"],
    summary="Metadata of a ready job's image",
    responses=error_responses(404, 422),
)
def image_metadata(job_id: uuid.UUID, actor: CurrentActor, db: SessionDep) -> ImageOut:
    detail = get_detail(db, team_id=actor.team_id, job_id=job_id, viewer_id=actor.user_id)
    if detail.image is None:
        raise StudioError(
            404,
            "not_found",
            f"This job has no stored image (it is {detail.job.status}).",
        )
    return ImageOut.of(detail.image)


def _serve(db: Session, actor_team: uuid.UUID, job_id: uuid.UUID, variant: str) -> Response:
    found = image_file(db, team_id=actor_team, job_id=job_id, variant=variant)
    try:
        if variant == "original":
            # The original carries its recipe, as every download does (app/recipes).
            data = original_download(db, team_id=actor_team, job_id=job_id).data
        else:
            data = get_storage().get(found.key)
    except ObjectMissing:
        raise StudioError(
            404, "not_found", "The image file is missing from storage; ask an admin."
        ) from None
    except (StorageError, OSError):
        raise StudioError(
            503, "storage_unavailable", "Image storage cannot be read right now; retry shortly."
        ) from None
    return Response(
        content=data,
        media_type=found.content_type,
        headers={
            # Stored images never change under their key, and they belong to one team.
            "Cache-Control": "private, max-age=86400, immutable",
            "Content-Disposition": f'inline; filename="{found.filename}"',
        },
    )


@router.get(
    "/images/{job_id}/original",
    response_class=Response,
    tags=["images"],
    summary="The original image file",
    responses={
        200: {
            "description": "The image as BFL made it.",
            "content": {t: _BINARY for t in _IMAGE_TYPES},
        },
        **error_responses(404, 422, 503),
    },
)
def image_original(job_id: uuid.UUID, actor: CurrentActor, db: SessionDep) -> Response:
    return _serve(db, actor.team_id, job_id, "original")


@router.get(
    "/images/{job_id}/thumbnail",
    response_class=Response,
    tags=["images"],
    summary="The WebP thumbnail",
    responses={
        200: {"description": "A small WebP preview.", "content": {"image/webp": _BINARY}},
        **error_responses(404, 422, 503),
    },
)
def image_thumbnail(job_id: uuid.UUID, actor: CurrentActor, db: SessionDep) -> Response:
    return _serve(db, actor.team_id, job_id, "thumb")


# --- prompt history ----------------------------------------------------------------------


class PromptOut(BaseModel):
    """A prompt the team used: how often, by whom, at what cost and when last."""

    prompt: str
    uses: int
    last_used_at: UtcDatetime
    credits: Decimal = Field(description="Credits BFL reported for these jobs.")
    people: list[str]
    last_job_id: uuid.UUID = Field(description="GET /api/v1/prompts/{id} gives a reusable body.")
    last_model: str


class PromptPage(BaseModel):
    items: list[PromptOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page.")


class PromptReuse(BaseModel):
    """A job's request, ready to send back to POST /api/v1/jobs."""

    model: str
    prompt: str
    params: dict[str, Any]
    count: int = 1


def _offset(cursor: str | None) -> int:
    if not cursor:
        return 0
    match = _PROMPT_CURSOR_RE.fullmatch(cursor.strip())
    if match is None:
        raise StudioError(
            422,
            "invalid_request",
            "cursor: this cursor is damaged; start again from the first page",
            [FieldProblem(field="cursor", message="not a cursor this API gave out")],
        )
    return int(match.group(1))


@router.get(
    "/prompts",
    response_model=PromptPage,
    tags=["prompts"],
    summary="The team's prompt history",
    responses=error_responses(422),
)
def prompts(
    actor: CurrentActor,
    db: SessionDep,
    q: Annotated[
        str | None,
        Query(max_length=500, pattern=NO_NUL, description="Full-text search in prompts."),
    ] = None,
    user: Annotated[uuid.UUID | None, Query(description="Only this person's uses.")] = None,
    cursor: Annotated[
        str | None,
        Query(max_length=40, pattern=NO_NUL, description="`next_cursor` of the previous page."),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 20,
) -> PromptPage:
    """Distinct prompts, most recently used first."""
    page = prompt_history(db, actor.team_id, q=q, user_id=user, offset=_offset(cursor), limit=limit)
    return PromptPage(
        items=[
            PromptOut(
                prompt=p.prompt,
                uses=p.uses,
                last_used_at=p.last_used_at,
                credits=p.credits,
                people=p.people,
                last_job_id=p.last_job_id,
                last_model=p.last_model,
            )
            for p in page.items
        ],
        next_cursor=f"p{page.next_offset}" if page.next_offset is not None else None,
    )


@router.get(
    "/prompts/{job_id}",
    response_model=PromptReuse,
    tags=["prompts"],
    summary="A job's request, ready to queue again",
    responses=error_responses(404, 422),
)
def prompt_reuse(job_id: uuid.UUID, actor: CurrentActor, db: SessionDep) -> PromptReuse:
    job = team_job(db, team_id=actor.team_id, job_id=job_id)
    params = {
        k: v
        for k, v in shown_params(job.params).items()
        # Stored reference keys only mean something inside the studio.
        if not (isinstance(v, str) and v.startswith("stored:"))
    }
    return PromptReuse(model=job.model, prompt=job.prompt, params=params)
