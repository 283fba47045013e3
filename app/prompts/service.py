"""Shared prompt history: the team's distinct prompts, who used them, how often and at what cost."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import func, literal, select, tuple_
from sqlalchemy.orm import Session

from app.auth.models import User
from app.gallery.service import in_search_index, prompt_matches
from app.jobs.models import Job

PAGE_SIZE = 40
MAX_PAGE_SIZE = 200


@dataclass(frozen=True)
class PromptUse:
    """One distinct prompt of the team with its usage figures."""

    prompt: str
    uses: int
    last_used_at: datetime
    credits: Decimal
    people: list[str]
    last_job_id: uuid.UUID
    last_model: str


@dataclass(frozen=True)
class PromptPage:
    items: list[PromptUse]
    next_offset: int | None


#: Newest jobs in scope read in order (and tested against a search) before older ones are
#: asked of the indexes: a page of prompts is nearly always among them. A short walk first,
#: which is enough without a search or for a common word.
FIRST_WALK_ROWS = 300
WALK_ROWS = 3_000


def _walk(
    db: Session, scope: list[Any], hit: Any, wanted: int, walk_rows: int
) -> tuple[list[str], tuple[datetime, uuid.UUID] | None]:
    """The first `wanted` distinct prompts among the newest `walk_rows` jobs in `scope` that
    satisfy `hit`, in order of their latest use, and the walk's last job as (created_at, id)
    when there may be older ones (None: the walk saw every job in scope)."""
    newest_first = (Job.created_at.desc(), Job.id.desc())
    walk = (
        select(
            Job.prompt,
            Job.id,
            Job.created_at,
            hit.label("hit"),
            func.row_number().over(order_by=newest_first).label("n"),
        )
        .where(*scope)
        .order_by(*newest_first)
        .limit(walk_rows)
        .cte("walk")
    )
    # Each prompt where the walk first meets it (its latest use), and the walk's last row,
    # so only the page's prompts leave the database.
    at_edge = walk.c.n == walk_rows
    first = func.min(walk.c.n)
    rows = db.execute(
        select(
            walk.c.prompt,
            select(walk.c.created_at).where(at_edge).scalar_subquery().label("edge_at"),
            select(walk.c.id).where(at_edge).scalar_subquery().label("edge_id"),
        )
        .where(walk.c.hit)
        .group_by(walk.c.prompt)
        .order_by(first)
        .limit(wanted)
    ).all()
    if rows:
        edge_at, edge_id = rows[0].edge_at, rows[0].edge_id
    else:
        last = db.execute(select(walk.c.created_at, walk.c.id).where(at_edge)).first()
        edge_at, edge_id = (last.created_at, last.id) if last is not None else (None, None)
    edge = (edge_at, edge_id) if edge_at is not None else None
    return [r.prompt for r in rows], edge


def _prompts_newest_first(
    db: Session,
    team_id: uuid.UUID,
    user_id: uuid.UUID | None,
    scope: list[Any],
    q: str | None,
    wanted: int,
) -> list[str]:
    """Up to `wanted` distinct prompts in `scope` (matching `q`), by their latest use.

    Grouping every matching job by prompt read tens of thousands of rows at 1M jobs (0.5-1 s).
    A prompt's latest use is its first in a newest-first walk, so this walks the newest
    FIRST_WALK_ROWS jobs (ix_jobs_team_created, each row tested against `q`), then as many
    more as their share of prompts says a page needs (at most WALK_ROWS), and stops there
    when they hold enough prompts; otherwise the prompts only older jobs use are grouped from
    what the indexes give (ix_jobs_team_search for a search), as the gallery's search does
    (app/gallery/service.py `_search_page`).
    """
    hit: Any = prompt_matches(q) if q else literal(True)
    order, edge = _walk(db, scope, hit, wanted, FIRST_WALK_ROWS)
    if len(order) >= wanted or edge is None:
        return order  # enough prompts, or the walk saw every job in scope
    # The short walk's share of prompts says how far a longer one must go; a word too rare
    # for WALK_ROWS goes to the index at once.
    needed = int(1.5 * FIRST_WALK_ROWS * wanted / len(order)) + 1 if order else WALK_ROWS + 1
    if needed <= WALK_ROWS:
        order, edge = _walk(db, scope, hit, wanted, needed)
        if len(order) >= wanted or edge is None:
            return order
    index_scope: list[Any] = list(scope)
    if q:
        index_scope = [
            in_search_index(Job.team_id, team_id)
            if user_id is None
            else in_search_index(Job.user_id, user_id),
            *scope,
            hit,
        ]
    last_used = func.max(Job.created_at)
    older = db.scalars(
        select(Job.prompt)
        .where(*index_scope, tuple_(Job.created_at, Job.id) < edge)
        .group_by(Job.prompt)
        .order_by(last_used.desc(), Job.prompt)
        .limit(wanted)
    )
    seen = set(order)
    order += [p for p in older if p not in seen]
    return order[:wanted]


def prompt_history(
    db: Session,
    team_id: uuid.UUID,
    *,
    q: str | None = None,
    user_id: uuid.UUID | None = None,
    offset: int = 0,
    limit: int = PAGE_SIZE,
    project_id: uuid.UUID | None = None,
) -> PromptPage:
    """The team's distinct prompts, most recently used first.

    `q` searches prompts with the same full-text rules as the gallery; `user_id` keeps only
    that person's uses (the "mine" view), `project_id` that project's. Costs are what BFL
    reported for those jobs. Three
    queries whatever the page size (four when the newest jobs hold too few prompts): the
    page's prompts, their figures, then the uses of just those prompts.
    """
    limit = max(1, min(limit, MAX_PAGE_SIZE))
    offset = max(0, offset)
    scope = [Job.team_id == team_id, Job.deleted_at.is_(None)]
    if user_id is not None:
        scope.append(Job.user_id == user_id)
    if project_id is not None:
        scope.append(Job.project_id == project_id)
    query = q.strip()[:500] if q and q.strip() else None
    wanted = offset + limit + 1
    order = _prompts_newest_first(db, team_id, user_id, scope, query, wanted)
    page = order[offset : offset + limit]
    has_more = len(order) > offset + limit
    if not page:
        return PromptPage(items=[], next_offset=None)
    # Step 1: the page's prompts with their figures. Whether a prompt matches depends on the
    # prompt alone, so every use of a page's prompt counts: looked up by the prompt itself
    # (ix_jobs_prompt_hash), not by the search.
    last_used = func.max(Job.created_at)
    figures = {
        r.prompt: r
        for r in db.execute(
            select(
                Job.prompt,
                func.count().label("uses"),
                last_used.label("last_used_at"),
                func.coalesce(func.sum(Job.cost_credits), 0).label("credits"),
            )
            .where(*scope, Job.prompt.in_(page))
            .group_by(Job.prompt)
        )
    }
    rows = [figures[p] for p in page if p in figures]
    rows.sort(key=lambda r: (-r.last_used_at.timestamp(), r.prompt))

    # Step 2: who used those prompts and their latest job, in one query for the whole page.
    uses = db.execute(
        select(Job.prompt, Job.id, Job.model, Job.user_id, User.name)
        .join(User, User.id == Job.user_id)
        .where(*scope, Job.prompt.in_([r.prompt for r in rows]))
        .order_by(Job.created_at.desc(), Job.id.desc())
    ).all()
    latest: dict[str, tuple[uuid.UUID, str]] = {}
    people: dict[str, set[str]] = {}
    for use in uses:
        latest.setdefault(use.prompt, (use.id, use.model))
        people.setdefault(use.prompt, set()).add(use.name)
    items = [
        PromptUse(
            prompt=r.prompt,
            uses=int(r.uses),
            last_used_at=r.last_used_at,
            credits=Decimal(r.credits),
            people=sorted(people.get(r.prompt, set())),
            last_job_id=latest[r.prompt][0],
            last_model=latest[r.prompt][1],
        )
        for r in rows
    ]
    return PromptPage(items=items, next_offset=offset + limit if has_more else None)
