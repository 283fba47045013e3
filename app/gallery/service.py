"""The team gallery: keyset-paged browsing of the team's jobs with filters and search."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import and_, exists, func, literal, or_, select, tuple_
from sqlalchemy.dialects.postgresql import array
from sqlalchemy.orm import Session

from app.auth.models import Membership, User
from app.boards.models import Board, BoardItem
from app.errors import FieldProblem, StudioError
from app.jobs.models import Favourite, Job, JobStatus

#: Tiles per gallery page; one screenful on a laptop, a few on a phone.
PAGE_SIZE = 36
MAX_PAGE_SIZE = 100
#: Characters of the prompt a tile needs for its caption; the full text is on the detail page.
_CAPTION_CHARS = 160
_CURSOR_RE = re.compile(r"(\d{1,20})\.([0-9a-f]{32})")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class GalleryInputError(StudioError, ValueError):
    """A filter value that cannot be used (422); `field` names the filter, the message says why."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(
            422, "invalid_request", message, [FieldProblem(field=field, message=message)]
        )
        self.field = field


@dataclass(frozen=True)
class Cursor:
    """Where the next page starts: the (created_at, id) of the last tile shown."""

    created_at: datetime
    job_id: uuid.UUID

    def encode(self) -> str:
        # Whole microseconds since the epoch keep the exact Postgres timestamp, URL-safe.
        delta = self.created_at.astimezone(UTC) - _EPOCH
        micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
        return f"{micros}.{self.job_id.hex}"

    @classmethod
    def decode(cls, raw: str) -> Cursor:
        match = _CURSOR_RE.fullmatch(raw.strip())
        if match is None:
            raise GalleryInputError(
                "after", "this page link is damaged; reload the gallery to start again"
            )
        try:
            created = _EPOCH + timedelta(microseconds=int(match.group(1)))
        except OverflowError:
            # Twenty digits fit the pattern but not a date: a hand-made cursor, not ours.
            raise GalleryInputError(
                "after", "the cursor is invalid; start from the first page"
            ) from None
        return cls(created_at=created, job_id=uuid.UUID(hex=match.group(2)))


@dataclass(frozen=True)
class GalleryFilters:
    """What the gallery shows; every field is optional and they combine with AND."""

    model: str | None = None
    user_id: uuid.UUID | None = None
    status: str | None = None
    date_from: date | None = None
    date_to: date | None = None
    favourites: bool = False
    q: str | None = None
    #: Only this project's jobs (the team condition still applies, so another team's is empty).
    project_id: uuid.UUID | None = None
    #: Only images on this board (app/boards); the team is checked on the board too.
    board_id: uuid.UUID | None = None

    @property
    def active(self) -> bool:
        return any(
            (
                self.project_id,
                self.model,
                self.user_id,
                self.status,
                self.date_from,
                self.date_to,
                self.favourites,
                self.q,
                self.board_id,
            )
        )


@dataclass(frozen=True)
class GalleryTile:
    """One thumbnail in the grid: only what a tile shows."""

    job_id: uuid.UUID
    created_at: datetime
    model: str
    status: str
    width: int
    height: int
    caption: str
    user_id: uuid.UUID
    author: str
    favourite: bool

    @property
    def has_image(self) -> bool:
        return self.status == JobStatus.READY


@dataclass(frozen=True)
class GalleryPage:
    tiles: list[GalleryTile]
    next_cursor: str | None


def _blank(value: str | None) -> bool:
    return value is None or not value.strip()


def _uuid_filter(value: str | None, field: str, hint: str) -> uuid.UUID | None:
    """A chosen id from the query string, None when blank; raises GalleryInputError(field, hint)."""
    if value is None or _blank(value):
        return None
    try:
        return uuid.UUID(value.strip())
    except ValueError:
        raise GalleryInputError(field, hint) from None


def _day_filter(name: str, value: str | None) -> date | None:
    """A YYYY-MM-DD day from the query string, None when blank; raises GalleryInputError."""
    if value is None or _blank(value):
        return None
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        raise GalleryInputError(name, f"{name} must be a date like 2025-01-31") from None


def parse_filters(
    *,
    model: str | None = None,
    user: str | None = None,
    status: str | None = None,
    date_from: str | None = None,
    date_to: str | None = None,
    favourites: str | bool | None = None,
    q: str | None = None,
    project: str | None = None,
    board: str | None = None,
) -> GalleryFilters:
    """Filters from query-string values; blank means "any". Raises GalleryInputError."""
    user_id = _uuid_filter(user, "user", "choose a person from the list")
    project_id = _uuid_filter(project, "project", "choose a project from the list")
    if not _blank(status) and status not in {s.value for s in JobStatus}:
        raise GalleryInputError(
            "status", f"status must be one of: {', '.join(s.value for s in JobStatus)}"
        )
    board_id = _uuid_filter(board, "board", "choose a board from the list")
    start, end = _day_filter("from", date_from), _day_filter("to", date_to)
    if start and end and start > end:
        raise GalleryInputError("to", "the end date is before the start date; swap them")
    fav = favourites if isinstance(favourites, bool) else (favourites or "") in ("1", "on", "true")
    return GalleryFilters(
        model=None if _blank(model) else (model or "").strip(),
        user_id=user_id,
        status=None if _blank(status) else status,
        date_from=start,
        date_to=end,
        favourites=fav,
        q=None if _blank(q) else (q or "").strip()[:500],
        project_id=project_id,
        board_id=board_id,
    )


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def search_query(q: str) -> Any:
    """`q` parsed as a web-style full-text query, once per statement.

    A scalar subquery, so a prepared statement's generic plan (the driver prepares statements
    it sees often) parses the text once rather than once for every row it tests.
    """
    return select(func.websearch_to_tsquery("english", q)).scalar_subquery()


def prompt_matches(q: str) -> Any:
    """The full-text condition on jobs.prompt_tsv (GIN-indexed) for a web-style search."""
    return Job.prompt_tsv.op("@@")(search_query(q))


def in_search_index(column: Any, value: uuid.UUID) -> Any:
    """`column = value` as a key of ix_jobs_team_search (which holds one-element arrays)."""
    return array([column]).contains(array([value]))


def _on_row(condition: Any) -> Any:
    """The condition checked on each row read, never through an index: `(x = y) IS TRUE`."""
    return condition.is_(True)


#: A search first reads up to this many of the newest jobs in scope and tests each (a third
#: as many for one person's); words in more than ~1.2 % of them fill a page there (2-7 ms of
#: database time at 1M jobs). Rarer ones are then read from the GIN index, whose cost grows with
#: the matches rather than the jobs. Measured in bench/gallery.py; see bench/RESULTS.md.
SEARCH_WALK_ROWS = 3_000


def list_gallery(
    db: Session,
    *,
    team_id: uuid.UUID,
    viewer_id: uuid.UUID,
    filters: GalleryFilters | None = None,
    after: str | None = None,
    limit: int = PAGE_SIZE,
    search_walk_rows: int = SEARCH_WALK_ROWS,
) -> GalleryPage:
    """One page of the team's jobs, newest first, continuing after the cursor `after`.

    Keyset pagination on (created_at, id) walks ix_jobs_team_created, so page 1000 costs what
    page 1 costs. A search runs in two bounded steps (see `_search_page`) so neither a common
    nor a rare word makes PostgreSQL read the whole team. The page's ids come first; author,
    caption and favourite are then read for just those rows.
    """
    filters = filters or GalleryFilters()
    limit = max(1, min(limit, MAX_PAGE_SIZE))
    scope = _scope(filters, team_id=team_id, after=after)
    in_team = Job.team_id == team_id
    favourite_of_viewer = (
        exists().where(Favourite.user_id == viewer_id, Favourite.job_id == Job.id).correlate(Job)
    )
    if filters.q:
        ids = _search_ids(
            db,
            filters,
            team_id=team_id,
            viewer_id=viewer_id,
            scope=scope,
            wanted=limit + 1,
            search_walk_rows=search_walk_rows,
        )
    else:
        if filters.favourites:
            scope.append(favourite_of_viewer)
        ids = list(
            db.scalars(
                select(Job.id)
                .where(in_team, *scope)
                .order_by(Job.created_at.desc(), Job.id.desc())
                .limit(limit + 1)
            )
        )
    if not ids:
        return GalleryPage(tiles=[], next_cursor=None)
    return _tiles_page(db, ids, favourite_of_viewer, limit)


def _scope(filters: GalleryFilters, *, team_id: uuid.UUID, after: str | None) -> list[Any]:
    """Conditions for the filters and the cursor (not the team itself); raises on a bad cursor."""
    scope: list[Any] = [Job.deleted_at.is_(None)]
    if filters.model:
        scope.append(Job.model == filters.model)
    if filters.user_id:
        scope.append(Job.user_id == filters.user_id)
    if filters.project_id:
        scope.append(Job.project_id == filters.project_id)
    if filters.status:
        scope.append(Job.status == filters.status)
    if filters.date_from:
        scope.append(Job.created_at >= _day_start(filters.date_from))
    if filters.date_to:
        scope.append(Job.created_at < _day_start(filters.date_to + timedelta(days=1)))
    if filters.board_id:
        scope.append(on_board(team_id=team_id, board_id=filters.board_id))
    if after:
        cursor = Cursor.decode(after)
        scope.append(tuple_(Job.created_at, Job.id) < (cursor.created_at, cursor.job_id))
    return scope


def _search_ids(
    db: Session,
    filters: GalleryFilters,
    *,
    team_id: uuid.UUID,
    viewer_id: uuid.UUID,
    scope: list[Any],
    wanted: int,
    search_walk_rows: int,
) -> list[uuid.UUID]:
    """Ids of the newest `wanted` jobs in the team and `scope` matching `filters.q`."""
    assert filters.q is not None
    in_team = Job.team_id == team_id
    # A scalar subquery, not EXISTS: PostgreSQL hashes an EXISTS over the viewer's every
    # favourite before the walk; this looks up only the rows whose words match.
    marked = (
        select(literal(True))
        .where(Favourite.user_id == viewer_id, Favourite.job_id == Job.id)
        .correlate(Job)
        .scalar_subquery()
        .is_not(None)
    )
    # The GIN step asks the index for the team's matches, or with a person chosen for that
    # person's only, the team then checked on the row: a person's jobs are nearly all in
    # one team, and a team's key (every job of it) costs more to intersect than it removes.
    if filters.user_id:
        index_scope = [in_search_index(Job.user_id, filters.user_id), _on_row(in_team)]
    else:
        index_scope = [in_search_index(Job.team_id, team_id)]
    return _search_page(
        db,
        [in_team, *scope],
        [*index_scope, *scope],
        filters.q,
        marked if filters.favourites else None,
        wanted,
        # One person's jobs sit about one to a table page, the team's several to a page:
        # a third of the rows keeps the walk's page reads alike.
        walk_rows=max(1, search_walk_rows // 3) if filters.user_id else search_walk_rows,
    )


def _tiles_page(
    db: Session, ids: list[uuid.UUID], favourite_of_viewer: Any, limit: int
) -> GalleryPage:
    """Tiles for up to `limit` of `ids` (author, caption, favourite read for just these), and
    the cursor after the last when `ids` holds one more."""
    rows = db.execute(
        select(
            Job.id,
            Job.created_at,
            Job.model,
            Job.status,
            Job.width,
            Job.height,
            func.left(Job.prompt, _CAPTION_CHARS).label("caption"),
            Job.user_id,
            User.name.label("author"),
            favourite_of_viewer.label("favourite"),
        )
        .join(User, User.id == Job.user_id)
        .where(Job.id.in_(ids))
        .order_by(Job.created_at.desc(), Job.id.desc())
    ).all()
    tiles = [
        GalleryTile(
            job_id=r.id,
            created_at=r.created_at,
            model=r.model,
            status=r.status,
            width=r.width,
            height=r.height,
            caption=r.caption,
            user_id=r.user_id,
            author=r.author,
            favourite=bool(r.favourite),
        )
        for r in rows[:limit]
    ]
    next_cursor = None
    if len(rows) > limit:
        last = tiles[-1]
        next_cursor = Cursor(last.created_at, last.job_id).encode()
    return GalleryPage(tiles=tiles, next_cursor=next_cursor)


def on_board(*, team_id: uuid.UUID, board_id: uuid.UUID) -> Any:
    """The job is on the team's board `board_id` (an EXISTS through the board items' key)."""
    return (
        exists()
        .where(
            BoardItem.board_id == board_id,
            BoardItem.job_id == Job.id,
            Board.id == BoardItem.board_id,
            Board.team_id == team_id,
        )
        .correlate(Job)
    )


def _search_page(
    db: Session,
    scope: list[Any],
    index_scope: list[Any],
    q: str,
    favourite: Any | None,
    wanted: int,
    *,
    walk_rows: int,
) -> list[uuid.UUID]:
    """Ids of the newest `wanted` jobs in `scope` whose prompt matches `q`, newest first.

    `index_scope` is the same condition written for the GIN step (see list_gallery).

    PostgreSQL alone picks between walking the recency index and testing every row (fast for
    common words, a walk through the whole team for rare ones) and reading every match from
    the GIN index then sorting them (fast for rare words, tens of thousands of row reads for
    common ones). Its guess comes from statistics that know neither which team uses a word nor,
    for a prepared statement's generic plan, the word at all, and a wrong guess cost over
    half a second at 1M jobs. So the choice is made here, on what is found:

    1. Walk the newest `walk_rows` jobs in scope and test each (a bounded read).
    2. If that did not fill the page and more jobs are older, fetch the remaining matches
       older than the walk through the GIN index (team, person and words are all in it) and
       sort them. The ORDER BY on an expression keeps PostgreSQL from walking the
       recency index here.
    """
    walk_rows = max(1, walk_rows)
    hit: Any = prompt_matches(q)
    if favourite is not None:
        hit = and_(hit, favourite)
    found, edge = _walk_newest(db, scope, hit, wanted, walk_rows)
    if len(found) >= wanted or edge is None:
        # The page is full, or the walk saw every job in scope.
        return found[:wanted]
    older = (
        select(Job.id)
        .where(
            *index_scope,
            hit,
            tuple_(Job.created_at, Job.id) < (edge.created_at, edge.id),
        )
        # "+ 0 seconds" hides the indexed order, so the GIN index is the only cheap way in.
        .order_by(
            (Job.created_at + literal(timedelta(0))).desc(),
            Job.id.desc(),
        )
        .limit(wanted - len(found))
    )
    return found + list(db.scalars(older))


def _walk_newest(
    db: Session, scope: list[Any], hit: Any, wanted: int, walk_rows: int
) -> tuple[list[uuid.UUID], Any | None]:
    """Step 1 of `_search_page`: test the newest `walk_rows` jobs in `scope` against `hit`.

    Returns the matching ids newest first (at most `wanted`) and the walk's last row (id,
    created_at): None when the scope ended before `walk_rows` rows or the page filled first.
    """
    newest_first = (Job.created_at.desc(), Job.id.desc())
    walk = (
        select(
            Job.id,
            Job.created_at,
            hit.label("hit"),
            func.row_number().over(order_by=newest_first).label("n"),
        )
        .where(*scope)
        .order_by(*newest_first)
        .limit(walk_rows)
        .subquery("walk")
    )
    # Matches and the walk's last row; stops as soon as the page is full.
    rows = db.execute(
        select(walk.c.id, walk.c.created_at, walk.c.hit, walk.c.n)
        .where(or_(walk.c.hit, walk.c.n == walk_rows))
        .limit(wanted)
    ).all()
    found = [r.id for r in rows if r.hit]
    edge = next((r for r in rows if r.n == walk_rows), None)
    return found, edge


def team_people(db: Session, team_id: uuid.UUID) -> list[tuple[uuid.UUID, str]]:
    """(user id, name) of everyone in the team, for the person filter."""
    rows = db.execute(
        select(User.id, User.name)
        .join(Membership, Membership.user_id == User.id)
        .where(Membership.team_id == team_id)
        .order_by(func.lower(User.name))
    ).all()
    return [(r.id, r.name) for r in rows]


def filters_query(filters: GalleryFilters) -> dict[str, str]:
    """The filters as query-string values, so the next page keeps them."""
    values: dict[str, str] = {}
    if filters.model:
        values["model"] = filters.model
    if filters.user_id:
        values["user"] = str(filters.user_id)
    if filters.status:
        values["status"] = filters.status
    if filters.date_from:
        values["from"] = filters.date_from.isoformat()
    if filters.date_to:
        values["to"] = filters.date_to.isoformat()
    if filters.favourites:
        values["favourites"] = "1"
    if filters.q:
        values["q"] = filters.q
    if filters.board_id:
        values["board"] = str(filters.board_id)
    return values


__all__ = [
    "PAGE_SIZE",
    "Cursor",
    "GalleryFilters",
    "GalleryInputError",
    "GalleryPage",
    "GalleryTile",
    "filters_query",
    "list_gallery",
    "parse_filters",
    "prompt_matches",
    "search_query",
    "team_people",
]
