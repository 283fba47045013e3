"""JSON API for boards: list, create, rename, choose a cover, delete, add and remove images.

A board's images are listed by GET /api/v1/jobs?board=<id>, the gallery's own listing.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter
from pydantic import BaseModel, Field

from app.auth.deps import ChangingActor, CurrentActor
from app.boards import service
from app.boards.models import BOARD_NAME_MAX_CHARS
from app.deps import SessionDep
from app.errors import FieldError, RequestInvalid, error_responses
from app.settings import get_settings
from app.timestamps import UtcDatetime

router = APIRouter(tags=["boards"])


class BoardOut(BaseModel):
    """A board of the team: its name, size, cover and who made it."""

    id: uuid.UUID
    name: str
    image_count: int = Field(description="Images on the board that are still in the gallery.")
    cover_job_id: uuid.UUID | None = Field(
        description="The cover image's job id: the chosen one, else the first image added."
    )
    cover_chosen: bool = Field(description="True when someone chose the cover.")
    created_by_id: uuid.UUID | None
    created_by: str | None
    created_at: UtcDatetime
    updated_at: UtcDatetime
    images_url: str = Field(description="The board's images: the jobs list with a board filter.")

    @classmethod
    def of(cls, board: service.BoardSummary) -> BoardOut:
        return cls(
            id=board.id,
            name=board.name,
            image_count=board.image_count,
            cover_job_id=board.cover_job_id,
            cover_chosen=board.cover_chosen,
            created_by_id=board.created_by_id,
            created_by=board.created_by,
            created_at=board.created_at,
            updated_at=board.updated_at,
            images_url=f"/api/v1/jobs?board={board.id}",
        )


class BoardIn(BaseModel):
    name: Annotated[str, Field(min_length=1, max_length=BOARD_NAME_MAX_CHARS)]


class BoardPatch(BaseModel):
    """Fields to change; `cover_job_id: null` goes back to the first image as cover."""

    name: Annotated[str | None, Field(min_length=1, max_length=BOARD_NAME_MAX_CHARS)] = None
    cover_job_id: uuid.UUID | None = None


class ImagesIn(BaseModel):
    job_ids: list[uuid.UUID] = Field(
        default_factory=list, description="Job ids of the team's images (at least one)."
    )


class RefusalOut(BaseModel):
    job_id: uuid.UUID
    reason: str


class ItemsOut(BaseModel):
    """What a change to many images did: how many changed, and each image refused with why."""

    changed: int
    refused: list[RefusalOut]

    @classmethod
    def of(cls, result: service.ItemsChanged) -> ItemsOut:
        return cls(
            changed=result.changed,
            refused=[RefusalOut(job_id=r.job_id, reason=r.reason) for r in result.refused],
        )


def _editor(actor: CurrentActor) -> service.Editor:
    return service.Editor(
        user_id=actor.user_id, email=actor.user.email, is_manager=actor.is_manager
    )


def _bounded(job_ids: list[uuid.UUID]) -> list[uuid.UUID]:
    limit = get_settings().MAX_BULK_IMAGES
    if len(job_ids) > limit:
        raise RequestInvalid(
            [FieldError("job_ids", f"at most {limit:,} images at once (MAX_BULK_IMAGES)")]
        )
    return job_ids


@router.get("/boards", response_model=list[BoardOut], summary="The team's boards")
def list_boards(actor: CurrentActor, db: SessionDep) -> list[BoardOut]:
    return [BoardOut.of(b) for b in service.list_boards(db, team_id=actor.team_id)]


@router.post(
    "/boards",
    response_model=BoardOut,
    status_code=201,
    summary="Create a board",
    responses=error_responses(422),
)
def create_board(body: BoardIn, actor: ChangingActor, db: SessionDep) -> BoardOut:
    board = service.create_board(db, team_id=actor.team_id, user_id=actor.user_id, name=body.name)
    return BoardOut.of(board)


@router.get(
    "/boards/{board_id}",
    response_model=BoardOut,
    summary="One board",
    responses=error_responses(404, 422),
)
def get_board(board_id: uuid.UUID, actor: CurrentActor, db: SessionDep) -> BoardOut:
    return BoardOut.of(service.get_board(db, team_id=actor.team_id, board_id=board_id))


@router.patch(
    "/boards/{board_id}",
    response_model=BoardOut,
    summary="Rename a board or choose its cover (its creator, managers and admins)",
    responses=error_responses(403, 404, 422),
)
def update_board(
    board_id: uuid.UUID, body: BoardPatch, actor: ChangingActor, db: SessionDep
) -> BoardOut:
    board = service.get_board(db, team_id=actor.team_id, board_id=board_id)
    if "name" in body.model_fields_set:
        board = service.rename_board(
            db, team_id=actor.team_id, board_id=board_id, editor=_editor(actor), name=body.name
        )
    if "cover_job_id" in body.model_fields_set:
        board = service.set_cover(
            db,
            team_id=actor.team_id,
            board_id=board_id,
            editor=_editor(actor),
            job_id=body.cover_job_id,
        )
    return BoardOut.of(board)


@router.delete(
    "/boards/{board_id}",
    response_model=BoardOut,
    summary="Delete a board (its images stay in the gallery); answers the board as it was",
    responses=error_responses(403, 404, 422),
)
def delete_board(board_id: uuid.UUID, actor: ChangingActor, db: SessionDep) -> BoardOut:
    board = service.get_board(db, team_id=actor.team_id, board_id=board_id)
    service.delete_board(db, team_id=actor.team_id, board_id=board_id, editor=_editor(actor))
    return BoardOut.of(board)


@router.post(
    "/boards/{board_id}/images",
    response_model=ItemsOut,
    summary="Add images to a board",
    responses=error_responses(404, 422),
)
def add_images(
    board_id: uuid.UUID, body: ImagesIn, actor: ChangingActor, db: SessionDep
) -> ItemsOut:
    result = service.add_images(
        db,
        team_id=actor.team_id,
        board_id=board_id,
        user_id=actor.user_id,
        job_ids=_bounded(body.job_ids),
    )
    return ItemsOut.of(result)


@router.delete(
    "/boards/{board_id}/images/{job_id}",
    response_model=ItemsOut,
    summary="Take an image off a board (it stays in the gallery)",
    responses=error_responses(404, 422),
)
def remove_image(
    board_id: uuid.UUID, job_id: uuid.UUID, actor: ChangingActor, db: SessionDep
) -> ItemsOut:
    result = service.remove_images(db, team_id=actor.team_id, board_id=board_id, job_ids=[job_id])
    return ItemsOut.of(result)
