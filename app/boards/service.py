"""Boards: create, rename, delete, put images on and take them off, choose a cover.

Who may do what (README, "Boards"): everyone in the team sees every board and may add and
remove images; the board's creator, managers and admins may rename it, choose its cover and
delete it. A manager's change to someone else's board is written to the audit log.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.audit.service import record
from app.auth.models import User
from app.boards.models import BOARD_NAME_MAX_CHARS, Board, BoardItem
from app.db import utcnow
from app.errors import FieldError, Forbidden, NotFound, RequestInvalid
from app.jobs.models import Image, Job


@dataclass(frozen=True)
class Editor:
    """Who is changing a board: their id and email (for the audit log) and whether they manage."""

    user_id: uuid.UUID
    email: str
    is_manager: bool


@dataclass(frozen=True)
class BoardSummary:
    """A board as lists and pages show it: name, size, cover and who made it."""

    id: uuid.UUID
    name: str
    image_count: int
    cover_job_id: uuid.UUID | None
    cover_chosen: bool
    created_by_id: uuid.UUID | None
    created_by: str | None
    created_at: datetime
    updated_at: datetime

    def can_edit(self, user_id: uuid.UUID, is_manager: bool) -> bool:
        """True for the creator, managers and admins (rename, cover, delete)."""
        return is_manager or self.created_by_id == user_id


@dataclass(frozen=True)
class ItemRefusal:
    """One image a bulk change did not touch, and why."""

    job_id: uuid.UUID
    reason: str


@dataclass(frozen=True)
class ItemsChanged:
    """What adding or removing images did: how many changed, which were refused."""

    changed: int
    refused: list[ItemRefusal]


def clean_name(raw: str | None) -> str:
    """A board name from what was typed (trimmed); RequestInvalid naming `name` otherwise."""
    name = " ".join((raw or "").split())
    if not name:
        raise RequestInvalid([FieldError("name", "give the board a name")])
    if len(name) > BOARD_NAME_MAX_CHARS:
        raise RequestInvalid(
            [FieldError("name", f"a board name has at most {BOARD_NAME_MAX_CHARS} characters")]
        )
    return name


def _name_taken(name: str) -> RequestInvalid:
    return RequestInvalid(
        [FieldError("name", f"the team already has a board called {name!r}; choose another")]
    )


def _board(db: Session, team_id: uuid.UUID, board_id: uuid.UUID) -> Board:
    board = db.scalars(
        select(Board).where(Board.id == board_id, Board.team_id == team_id).with_for_update()
    ).first()
    if board is None:
        raise NotFound("That board")
    return board


def _first_item() -> Any:
    """The board's first-added image still in the gallery (the cover when none is chosen)."""
    return (
        select(BoardItem.job_id)
        .join(Job, Job.id == BoardItem.job_id)
        .join(Image, Image.job_id == Job.id)
        .where(BoardItem.board_id == Board.id, Job.deleted_at.is_(None))
        .order_by(BoardItem.created_at, BoardItem.job_id)
        .limit(1)
        .correlate(Board)
        .scalar_subquery()
    )


def list_boards(
    db: Session, *, team_id: uuid.UUID, board_id: uuid.UUID | None = None
) -> list[BoardSummary]:
    """The team's boards by name (or just `board_id`), with image counts and covers."""
    count = (
        select(func.count())
        .select_from(BoardItem)
        .join(Job, Job.id == BoardItem.job_id)
        .where(BoardItem.board_id == Board.id, Job.deleted_at.is_(None))
        .correlate(Board)
        .scalar_subquery()
    )
    chosen = (
        select(BoardItem.job_id)
        .join(Job, Job.id == BoardItem.job_id)
        .where(
            BoardItem.board_id == Board.id,
            BoardItem.job_id == Board.cover_job_id,
            Job.deleted_at.is_(None),
        )
        .correlate(Board)
        .scalar_subquery()
    )
    query = (
        select(Board, User.name, count.label("n"), chosen.label("chosen"), _first_item())
        .outerjoin(User, User.id == Board.created_by_id)
        .where(Board.team_id == team_id)
        .order_by(func.lower(Board.name), Board.id)
    )
    if board_id is not None:
        query = query.where(Board.id == board_id)
    return [
        BoardSummary(
            id=board.id,
            name=board.name,
            image_count=int(n or 0),
            cover_job_id=chosen_id or first_id,
            cover_chosen=chosen_id is not None,
            created_by_id=board.created_by_id,
            created_by=author,
            created_at=board.created_at,
            updated_at=board.updated_at,
        )
        for board, author, n, chosen_id, first_id in db.execute(query).all()
    ]


def get_board(db: Session, *, team_id: uuid.UUID, board_id: uuid.UUID) -> BoardSummary:
    """One of the team's boards; NotFound for any other team's."""
    found = list_boards(db, team_id=team_id, board_id=board_id)
    if not found:
        raise NotFound("That board")
    return found[0]


def create_board(
    db: Session, *, team_id: uuid.UUID, user_id: uuid.UUID, name: str | None
) -> BoardSummary:
    """A new, empty board in the team. RequestInvalid (`name`) for a blank or taken name."""
    clean = clean_name(name)
    board = Board(team_id=team_id, created_by_id=user_id, name=clean)
    try:
        with db.begin_nested():
            db.add(board)
            db.flush()
    except IntegrityError:
        raise _name_taken(clean) from None
    return get_board(db, team_id=team_id, board_id=board.id)


def _may_edit(board: Board, editor: Editor, action: str) -> None:
    """Forbidden unless the editor made the board or manages; a manager's change is audited."""
    if board.created_by_id == editor.user_id:
        return
    if not editor.is_manager:
        raise Forbidden(
            f"Only the person who made this board, a manager or an admin can {action} it."
        )


def _audit(
    db: Session,
    board: Board,
    editor: Editor,
    action: str,
    before: dict[str, object] | None,
    after: dict[str, object] | None,
) -> None:
    if board.created_by_id == editor.user_id:
        return
    record(
        db,
        team_id=board.team_id,
        actor_id=editor.user_id,
        actor_email=editor.email,
        action=f"board.{action}",
        target_type="board",
        target_id=board.id,
        before=before,
        after=after,
    )


def rename_board(
    db: Session, *, team_id: uuid.UUID, board_id: uuid.UUID, editor: Editor, name: str | None
) -> BoardSummary:
    """Give a board a new name. NotFound, Forbidden (see module), RequestInvalid (`name`)."""
    board = _board(db, team_id, board_id)
    _may_edit(board, editor, "rename")
    clean, before = clean_name(name), board.name
    try:
        with db.begin_nested():
            board.name, board.updated_at = clean, utcnow()
            db.flush()
    except IntegrityError:
        raise _name_taken(clean) from None
    _audit(db, board, editor, "rename", {"name": before}, {"name": clean})
    return get_board(db, team_id=team_id, board_id=board_id)


def set_cover(
    db: Session,
    *,
    team_id: uuid.UUID,
    board_id: uuid.UUID,
    editor: Editor,
    job_id: uuid.UUID | None,
) -> BoardSummary:
    """Choose the board's cover among its images (None: the first image added is the cover).

    RequestInvalid (`cover_job_id`) for an image not on the board.
    """
    board = _board(db, team_id, board_id)
    _may_edit(board, editor, "choose the cover of")
    if job_id is not None:
        on_board = db.scalar(
            select(BoardItem.job_id)
            .join(Job, Job.id == BoardItem.job_id)
            .join(Image, Image.job_id == Job.id)
            .where(
                BoardItem.board_id == board.id,
                BoardItem.job_id == job_id,
                Job.deleted_at.is_(None),
            )
        )
        if on_board is None:
            raise RequestInvalid(
                [FieldError("cover_job_id", "the cover must be an image on this board")]
            )
    before = board.cover_job_id
    board.cover_job_id, board.updated_at = job_id, utcnow()
    db.flush()
    _audit(db, board, editor, "cover", {"cover_job_id": before}, {"cover_job_id": job_id})
    return get_board(db, team_id=team_id, board_id=board_id)


def delete_board(db: Session, *, team_id: uuid.UUID, board_id: uuid.UUID, editor: Editor) -> None:
    """Delete a board and its list of images; the images themselves stay in the gallery."""
    board = _board(db, team_id, board_id)
    _may_edit(board, editor, "delete")
    _audit(db, board, editor, "delete", {"name": board.name}, None)
    db.execute(delete(Board).where(Board.id == board.id, Board.team_id == team_id))
    db.flush()


def _team_jobs(db: Session, team_id: uuid.UUID, job_ids: Iterable[uuid.UUID]) -> set[uuid.UUID]:
    wanted = list(dict.fromkeys(job_ids))
    if not wanted:
        return set()
    return set(
        db.scalars(
            select(Job.id).where(
                Job.id.in_(wanted), Job.team_id == team_id, Job.deleted_at.is_(None)
            )
        )
    )


def add_images(
    db: Session,
    *,
    team_id: uuid.UUID,
    board_id: uuid.UUID,
    user_id: uuid.UUID,
    job_ids: Iterable[uuid.UUID],
) -> ItemsChanged:
    """Put the team's images on a board (those already on it stay, counted as unchanged).

    Ids that are not the team's (or deleted) are refused one by one, never added.
    """
    board = _board(db, team_id, board_id)
    wanted = list(dict.fromkeys(job_ids))
    if not wanted:
        raise RequestInvalid([FieldError("job_ids", "choose at least one image to add")])
    found = _team_jobs(db, team_id, wanted)
    refused = [ItemRefusal(j, "not found in this team") for j in wanted if j not in found]
    changed = 0
    if found:
        now = utcnow()
        # One microsecond apart, in the order given: "first added" (the default cover) is the
        # first image of the request, not whichever id sorts first.
        rows = [
            {
                "board_id": board.id,
                "job_id": j,
                "added_by_id": user_id,
                "created_at": now + timedelta(microseconds=n),
            }
            for n, j in enumerate(j for j in wanted if j in found)
        ]
        result = db.execute(
            insert(BoardItem)
            .values(rows)
            .on_conflict_do_nothing(index_elements=[BoardItem.board_id, BoardItem.job_id])
            .returning(BoardItem.job_id)
        )
        changed = len(result.all())
        db.execute(update(Board).where(Board.id == board.id).values(updated_at=now))
    db.flush()
    return ItemsChanged(changed=changed, refused=refused)


def remove_images(
    db: Session, *, team_id: uuid.UUID, board_id: uuid.UUID, job_ids: Iterable[uuid.UUID]
) -> ItemsChanged:
    """Take images off a board; the images stay in the gallery. Ids not on it are refused."""
    board = _board(db, team_id, board_id)
    wanted = list(dict.fromkeys(job_ids))
    removed = set(
        db.scalars(
            delete(BoardItem)
            .where(BoardItem.board_id == board.id, BoardItem.job_id.in_(wanted))
            .returning(BoardItem.job_id)
        )
    )
    if removed:
        db.execute(update(Board).where(Board.id == board.id).values(updated_at=utcnow()))
    db.flush()
    refused = [ItemRefusal(j, "not on this board") for j in wanted if j not in removed]
    return ItemsChanged(changed=len(removed), refused=refused)


def boards_of_job(
    db: Session, *, team_id: uuid.UUID, job_id: uuid.UUID
) -> list[tuple[uuid.UUID, str]]:
    """(id, name) of the team's boards an image is on, by name."""
    rows = db.execute(
        select(Board.id, Board.name)
        .join(BoardItem, BoardItem.board_id == Board.id)
        .where(Board.team_id == team_id, BoardItem.job_id == job_id)
        .order_by(func.lower(Board.name))
    ).all()
    return [(r.id, r.name) for r in rows]


__all__ = [
    "BoardSummary",
    "Editor",
    "ItemRefusal",
    "ItemsChanged",
    "add_images",
    "boards_of_job",
    "clean_name",
    "create_board",
    "delete_board",
    "get_board",
    "list_boards",
    "remove_images",
    "rename_board",
    "set_cover",
]
