"""A person's in-app notices in one team: list, count unread, mark read."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from app.alerts.models import Notice
from app.db import utcnow
from app.errors import NotFound

#: Notices one list shows (newest first).
NOTICE_LIST_SIZE = 100


class NoticeOut(BaseModel):
    """One notice: an alert as its reader sees it; `read_at` is null until marked read."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    title: str
    body: str
    created_at: datetime
    read_at: datetime | None


def list_notices(db: Session, *, team_id: uuid.UUID, user_id: uuid.UUID) -> list[NoticeOut]:
    """The person's latest notices in the team, newest first (at most NOTICE_LIST_SIZE)."""
    rows = db.scalars(
        select(Notice)
        .where(Notice.team_id == team_id, Notice.user_id == user_id)
        .order_by(Notice.created_at.desc(), Notice.id.desc())
        .limit(NOTICE_LIST_SIZE)
    )
    return [NoticeOut.model_validate(row) for row in rows]


def unread_count(db: Session, *, team_id: uuid.UUID, user_id: uuid.UUID) -> int:
    """How many of the person's notices in the team are unread."""
    return (
        db.scalar(
            select(func.count())
            .select_from(Notice)
            .where(Notice.team_id == team_id, Notice.user_id == user_id, Notice.read_at.is_(None))
        )
        or 0
    )


def mark_read(
    db: Session, *, team_id: uuid.UUID, user_id: uuid.UUID, notice_id: uuid.UUID
) -> NoticeOut:
    """Mark one of the person's notices read (again is harmless); NotFound for anyone else's."""
    notice = db.scalar(
        select(Notice).where(
            Notice.id == notice_id, Notice.team_id == team_id, Notice.user_id == user_id
        )
    )
    if notice is None:
        raise NotFound("That notice")
    if notice.read_at is None:
        notice.read_at = utcnow()
        db.flush()
    return NoticeOut.model_validate(notice)


def mark_all_read(db: Session, *, team_id: uuid.UUID, user_id: uuid.UUID) -> int:
    """Mark every unread notice of the person in the team read; returns how many."""
    result = db.execute(
        update(Notice)
        .where(Notice.team_id == team_id, Notice.user_id == user_id, Notice.read_at.is_(None))
        .values(read_at=utcnow())
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
