"""JSON API for browsing: the team's jobs with filters and search, and its prompt history."""

from __future__ import annotations

import re
import uuid
from datetime import date
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from app.auth.deps import CurrentActor
from app.deps import SessionDep
from app.errors import FieldError, FieldProblem, RequestInvalid, StudioError, error_responses
from app.gallery.service import (
    MAX_PAGE_SIZE,
    Cursor,
    GalleryInputError,
    list_gallery,
    parse_filters,
)
from app.jobs.api import jobs_out
from app.jobs.models import JobStatus
from app.jobs.queries import shown_params, team_job
from app.jobs.schemas import JobPage
from app.prompts.service import prompt_history
from app.timestamps import UtcDatetime

router = APIRouter()

NO_NUL = r"^[^\x00]*$"
_PROMPT_CURSOR_RE = re.compile(r"p(\d{1,9})")


# --- the team's jobs ---------------------------------------------------------------------


def _gallery_field(field: str) -> str:
    return {"after": "cursor", "from": "date_from", "to": "date_to", "user": "user"}.get(
        field, field
    )


@router.get(
    "/jobs",
    response_model=JobPage,
    tags=["jobs"],
    summary="List the team's jobs",
    responses=error_responses(422),
)
def list_jobs(
    actor: CurrentActor,
    db: SessionDep,
    model: Annotated[
        str | None, Query(max_length=64, pattern=NO_NUL, description="Only this model.")
    ] = None,
    user: Annotated[uuid.UUID | None, Query(description="Only this person's jobs.")] = None,
    project: Annotated[
        uuid.UUID | None, Query(description="Only this project's jobs (GET /api/v1/projects).")
    ] = None,
    status: Annotated[JobStatus | None, Query(description="Only jobs in this state.")] = None,
    date_from: Annotated[
        date | None, Query(description="Only jobs queued on or after this day (UTC).")
    ] = None,
    date_to: Annotated[
        date | None, Query(description="Only jobs queued on or before this day (UTC).")
    ] = None,
    favourites: Annotated[bool, Query(description="Only the caller's favourites.")] = False,
    q: Annotated[
        str | None,
        Query(max_length=500, pattern=NO_NUL, description="Full-text search in prompts."),
    ] = None,
    cursor: Annotated[
        str | None,
        Query(max_length=80, pattern=NO_NUL, description="`next_cursor` of the previous page."),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 20,
    board: Annotated[
        uuid.UUID | None, Query(description="Only images on this board (GET /api/v1/boards).")
    ] = None,
) -> JobPage:
    """Newest first, with filters that combine; keyset-paged so pages never shift or repeat."""
    try:
        filters = parse_filters(
            model=model,
            user=str(user) if user else None,
            status=status.value if status else None,
            date_from=date_from.isoformat() if date_from else None,
            date_to=date_to.isoformat() if date_to else None,
            favourites=favourites,
            q=q,
            project=str(project) if project else None,
            board=str(board) if board else None,
        )
        if cursor:
            Cursor.decode(cursor)
    except GalleryInputError as exc:
        # The same refusal, naming the field as this API spells it.
        raise RequestInvalid([FieldError(_gallery_field(exc.field), exc.message)]) from None
    page = list_gallery(
        db,
        team_id=actor.team_id,
        viewer_id=actor.user_id,
        filters=filters,
        after=cursor,
        limit=limit,
    )
    items = jobs_out(db, actor, [tile.job_id for tile in page.tiles])
    return JobPage(items=items, next_cursor=page.next_cursor)


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
    project: Annotated[uuid.UUID | None, Query(description="Only this project's uses.")] = None,
    cursor: Annotated[
        str | None,
        Query(max_length=40, pattern=NO_NUL, description="`next_cursor` of the previous page."),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 20,
) -> PromptPage:
    """Distinct prompts, most recently used first."""
    page = prompt_history(
        db,
        actor.team_id,
        q=q,
        user_id=user,
        offset=_offset(cursor),
        limit=limit,
        project_id=project,
    )
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
