"""The caller's notices as JSON under /api/v1: list and mark read."""

from __future__ import annotations

import uuid

from fastapi import APIRouter

from app.alerts.notices import NoticeOut, list_notices, mark_read
from app.auth.deps import ChangingActor, CurrentActor
from app.deps import SessionDep
from app.errors import error_responses

router = APIRouter(tags=["alerts"])


@router.get("/notices", response_model=list[NoticeOut], responses=error_responses(401))
def notices(actor: CurrentActor, db: SessionDep) -> list[NoticeOut]:
    """The caller's latest notices in this team (alerts addressed to them), newest first."""
    return list_notices(db, team_id=actor.team_id, user_id=actor.user_id)


@router.post(
    "/notices/{notice_id}/read",
    response_model=NoticeOut,
    responses=error_responses(401, 404, 422),
)
def read_notice(notice_id: uuid.UUID, actor: ChangingActor, db: SessionDep) -> NoticeOut:
    """Mark one of the caller's notices read; marking it again changes nothing."""
    return mark_read(db, team_id=actor.team_id, user_id=actor.user_id, notice_id=notice_id)
