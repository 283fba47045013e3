"""JSON API for bulk work: one action over many images, and a streaming ZIP of them."""

from __future__ import annotations

import uuid
from typing import Literal

from fastapi import APIRouter
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from app.auth.deps import Actor, ChangingActor
from app.boards.api import ItemsOut
from app.bulk import archive, service
from app.deps import SessionDep
from app.errors import error_responses

router = APIRouter(tags=["images"])


class FiltersIn(BaseModel):
    """The gallery's filters (GET /api/v1/jobs takes the same); all optional, combined with AND."""

    model: str | None = None
    user: uuid.UUID | None = None
    status: str | None = None
    date_from: str | None = Field(default=None, description="A day like 2025-01-31 (UTC).")
    date_to: str | None = Field(default=None, description="A day like 2025-01-31 (UTC).")
    favourites: bool = False
    q: str | None = Field(default=None, max_length=500)
    board: uuid.UUID | None = None


class SelectionIn(BaseModel):
    """Either `job_ids`, or `filters`: every image those filters match, resolved on the server."""

    job_ids: list[uuid.UUID] = Field(default_factory=list)
    filters: FiltersIn | None = None


class BulkIn(SelectionIn):
    action: Literal["board", "unboard", "favourite", "unfavourite", "delete", "project"]
    board_id: uuid.UUID | None = Field(
        default=None, description="The board to add to (`board`) or take off (`unboard`)."
    )
    project_id: uuid.UUID | None = Field(
        default=None,
        description="The team's active project to move them to (`project`), with their costs.",
    )


def _resolve(db: Session, actor: Actor, body: SelectionIn) -> list[uuid.UUID]:
    values: dict[str, str] = {}
    if body.filters is not None:
        f = body.filters
        raw = {
            "model": f.model,
            "user": f.user,
            "status": f.status,
            "from": f.date_from,
            "to": f.date_to,
            "favourites": "1" if f.favourites else None,
            "q": f.q,
            "board": f.board,
        }
        values = {k: str(v) for k, v in raw.items() if v is not None}
    selection = service.selection_from(
        values, all_matching=body.filters is not None, job_ids=tuple(body.job_ids)
    )
    return service.resolve(db, team_id=actor.team_id, viewer_id=actor.user_id, selection=selection)


@router.post(
    "/images/bulk",
    response_model=ItemsOut,
    summary="One action over many images (with the rights of one by one)",
    responses=error_responses(404, 422),
)
def bulk(body: BulkIn, actor: ChangingActor, db: SessionDep) -> ItemsOut:
    """Add to or take off a board, favourite, unfavourite, delete, or move to a project. A
    member deletes and moves only their own images; every image refused is listed with the
    reason."""
    result = service.run(
        db,
        action=body.action,
        team_id=actor.team_id,
        user_id=actor.user_id,
        is_manager=actor.is_manager,
        job_ids=_resolve(db, actor, body),
        board_id=body.board_id,
        project_id=body.project_id,
    )
    return ItemsOut.of(result)


@router.post(
    "/images/archive",
    response_class=StreamingResponse,
    summary="Many images as one streaming ZIP, each with its recipe, plus manifests",
    responses={
        200: {
            "description": "A ZIP: the originals with recipes, manifest.csv and manifest.json.",
            "content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}},
        },
        **error_responses(422),
    },
)
def archive_zip(body: SelectionIn, actor: ChangingActor, db: SessionDep) -> StreamingResponse:
    plan = archive.plan_archive(db, team_id=actor.team_id, job_ids=_resolve(db, actor, body))
    return archive.zip_response(plan)
