"""Selections of many images and what can be done to them at once, with the rights of one.

A selection is either ids picked on the page or "every image the filter matches", resolved
here on the server through the gallery's own listing (so search, favourites and the board
filter mean exactly what they mean in the grid), not from the tiles a browser happened to load.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from app.boards.service import ItemRefusal, ItemsChanged, add_images, remove_images
from app.db import utcnow
from app.errors import FieldError, RequestInvalid, StudioError
from app.gallery.service import (
    MAX_PAGE_SIZE,
    GalleryFilters,
    GalleryInputError,
    list_gallery,
    parse_filters,
)
from app.jobs.models import Favourite, Job
from app.jobs.moves import move_jobs
from app.jobs.service import delete_job
from app.settings import get_settings

ACTIONS = ("board", "unboard", "favourite", "unfavourite", "delete", "project")


@dataclass(frozen=True)
class Selection:
    """Picked ids, or (when `filters` is set) every image those filters match."""

    job_ids: tuple[uuid.UUID, ...] = ()
    filters: GalleryFilters | None = None


def selection_from(
    values: dict[str, str], all_matching: bool, job_ids: tuple[uuid.UUID, ...]
) -> Selection:
    """A selection from request values: every image the filter values match, or the ids.

    Raises RequestInvalid naming the filter at fault.
    """
    if not all_matching:
        return Selection(job_ids=job_ids)
    try:
        filters = parse_filters(
            model=values.get("model"),
            user=values.get("user"),
            status=values.get("status"),
            date_from=values.get("from"),
            date_to=values.get("to"),
            favourites=values.get("favourites"),
            q=values.get("q"),
            board=values.get("board"),
        )
    except GalleryInputError as exc:
        raise RequestInvalid([FieldError(f"filters.{exc.field}", exc.message)]) from None
    return Selection(filters=filters)


def parse_ids(raw: Iterable[str]) -> tuple[uuid.UUID, ...]:
    """Job ids from text (form values, comma-separated lists). RequestInvalid (`job_ids`)."""
    found: list[uuid.UUID] = []
    for chunk in raw:
        for piece in chunk.replace(",", " ").split():
            try:
                found.append(uuid.UUID(piece))
            except ValueError:
                raise RequestInvalid(
                    [FieldError("job_ids", f"{piece[:40]!r} is not an image id")]
                ) from None
    return tuple(dict.fromkeys(found))


def _too_many(limit: int) -> RequestInvalid:
    return RequestInvalid(
        [
            FieldError(
                "job_ids",
                f"more than {limit:,} images are selected (MAX_BULK_IMAGES); "
                "narrow the filter or pick fewer",
            )
        ]
    )


def resolve(
    db: Session, *, team_id: uuid.UUID, viewer_id: uuid.UUID, selection: Selection
) -> list[uuid.UUID]:
    """The selection's job ids, newest first for a filter; at most MAX_BULK_IMAGES.

    Raises RequestInvalid (`job_ids`, `filters`) for an empty or too large selection. Picked ids are
    returned as given: each action checks the team (and rights) per item.
    """
    limit = get_settings().MAX_BULK_IMAGES
    if selection.filters is None:
        if not selection.job_ids:
            raise RequestInvalid([FieldError("job_ids", "select at least one image")])
        if len(selection.job_ids) > limit:
            raise _too_many(limit)
        return list(selection.job_ids)
    ids: list[uuid.UUID] = []
    after: str | None = None
    while True:
        page = list_gallery(
            db,
            team_id=team_id,
            viewer_id=viewer_id,
            filters=selection.filters,
            after=after,
            limit=MAX_PAGE_SIZE,
        )
        ids.extend(t.job_id for t in page.tiles)
        if len(ids) > limit:
            raise _too_many(limit)
        if page.next_cursor is None:
            if not ids:
                raise RequestInvalid([FieldError("filters", "no image matches the filter")])
            return ids
        after = page.next_cursor


def set_favourites(
    db: Session, *, team_id: uuid.UUID, user_id: uuid.UUID, job_ids: list[uuid.UUID], on: bool
) -> ItemsChanged:
    """Mark (or unmark) the caller's favourite on each of the team's images; others refused."""
    found = set(
        db.scalars(
            select(Job.id).where(
                Job.id.in_(job_ids), Job.team_id == team_id, Job.deleted_at.is_(None)
            )
        )
    )
    refused = [ItemRefusal(j, "not found in this team") for j in job_ids if j not in found]
    if not found:
        return ItemsChanged(changed=0, refused=refused)
    if on:
        now = utcnow()
        rows = db.execute(
            insert(Favourite)
            .values([{"user_id": user_id, "job_id": j, "created_at": now} for j in found])
            .on_conflict_do_nothing(index_elements=[Favourite.user_id, Favourite.job_id])
            .returning(Favourite.job_id)
        ).all()
    else:
        rows = db.execute(
            delete(Favourite)
            .where(Favourite.user_id == user_id, Favourite.job_id.in_(found))
            .returning(Favourite.job_id)
        ).all()
    db.flush()
    return ItemsChanged(changed=len(rows), refused=refused)


def delete_many(
    db: Session,
    *,
    team_id: uuid.UUID,
    user_id: uuid.UUID,
    is_manager: bool,
    job_ids: list[uuid.UUID],
) -> ItemsChanged:
    """Delete each image as one delete would: a member their own only, a manager any.

    Every refusal is reported per image (not found, not yours); the rest are deleted.
    """
    refused: list[ItemRefusal] = []
    changed = 0
    for job_id in job_ids:
        try:
            with db.begin_nested():
                delete_job(
                    db, team_id=team_id, job_id=job_id, user_id=user_id, is_manager=is_manager
                )
        except StudioError as exc:
            reason = "not found in this team" if exc.status_code == 404 else exc.message
            refused.append(ItemRefusal(job_id, reason))
        else:
            changed += 1
    return ItemsChanged(changed=changed, refused=refused)


def run(
    db: Session,
    *,
    action: str,
    team_id: uuid.UUID,
    user_id: uuid.UUID,
    is_manager: bool,
    job_ids: list[uuid.UUID],
    board_id: uuid.UUID | None = None,
    project_id: uuid.UUID | None = None,
) -> ItemsChanged:
    """One bulk action over resolved ids: `board` / `unboard` (add to or take off the board
    `board_id`), `favourite`, `unfavourite`, `delete` or `project` (move to the project
    `project_id`, with their costs; see `app.jobs.moves`).

    Raises RequestInvalid (`action`, `board_id`, `project_id`) for a bad request, NotFound
    for a board or project outside the team.
    """
    if action == "board":
        if board_id is None:
            raise RequestInvalid([FieldError("board_id", "choose the board to add them to")])
        return add_images(db, team_id=team_id, board_id=board_id, user_id=user_id, job_ids=job_ids)
    if action == "unboard":
        if board_id is None:
            raise RequestInvalid([FieldError("board_id", "choose the board to take them off")])
        return remove_images(db, team_id=team_id, board_id=board_id, job_ids=job_ids)
    if action in ("favourite", "unfavourite"):
        return set_favourites(
            db, team_id=team_id, user_id=user_id, job_ids=job_ids, on=action == "favourite"
        )
    if action == "delete":
        return delete_many(
            db, team_id=team_id, user_id=user_id, is_manager=is_manager, job_ids=job_ids
        )
    if action == "project":
        outcome = move_jobs(
            db,
            team_id=team_id,
            user_id=user_id,
            is_manager=is_manager,
            job_ids=job_ids,
            project_id=project_id,
        )
        refused = [ItemRefusal(job_id, reason) for job_id, reason in outcome.refused]
        return ItemsChanged(changed=len(outcome.moved), refused=refused)
    raise RequestInvalid([FieldError("action", f"action must be one of: {', '.join(ACTIONS)}")])


def summary(action: str, result: ItemsChanged) -> str:
    """One sentence people read about a bulk action's outcome, refusals grouped by reason."""
    verbs = {
        "board": "Added to the board",
        "unboard": "Taken off the board",
        "favourite": "Marked as favourite",
        "unfavourite": "Unmarked",
        "delete": "Deleted",
        "project": "Moved to the project",
    }
    text = f"{verbs.get(action, 'Changed')}: {result.changed}."
    reasons: dict[str, int] = {}
    for refusal in result.refused:
        reasons[refusal.reason] = reasons.get(refusal.reason, 0) + 1
    if reasons:
        parts = "; ".join(f"{n} {reason.rstrip('.')}" for reason, n in reasons.items())
        text += f" Not changed: {len(result.refused)} ({parts})."
    return text


__all__ = [
    "ACTIONS",
    "Selection",
    "delete_many",
    "parse_ids",
    "resolve",
    "run",
    "set_favourites",
    "summary",
]
