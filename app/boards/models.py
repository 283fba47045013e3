"""Boards and the images on them. A board holds references to jobs, never the jobs themselves:
deleting a board (or taking an image off it) leaves every image where it was."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, Index, String, func, text
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, Timestamped, new_id, utcnow

#: Longest board name, in characters.
BOARD_NAME_MAX_CHARS = 120


class Board(Timestamped, Base):
    """A named collection inside one team; its creator and managers may rename or delete it."""

    __tablename__ = "boards"
    __table_args__ = (
        # One board of a name per team, whatever the letter case.
        Index("ux_boards_team_name", "team_id", text("lower(name)"), unique=True),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    team_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("teams.id", ondelete="CASCADE"), nullable=False
    )
    created_by_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )
    name: Mapped[str] = mapped_column(String(BOARD_NAME_MAX_CHARS), nullable=False)
    #: The chosen cover; None (or an image no longer on the board) means the first one added.
    cover_job_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="SET NULL")
    )
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), default=utcnow, nullable=False
    )


class BoardItem(Timestamped, Base):
    """One image on one board; `created_at` is when it was added."""

    __tablename__ = "board_items"
    __table_args__ = (Index("ix_board_items_job", "job_id"),)

    board_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("boards.id", ondelete="CASCADE"), primary_key=True
    )
    job_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True
    )
    added_by_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )
