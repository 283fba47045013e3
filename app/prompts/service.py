"""Shared prompt history: the team's distinct prompts, who used them, how often and at what cost."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.auth.models import User
from app.gallery.service import prompt_matches
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
    reported for those jobs. Two queries whatever the page size: the grouped prompts, then the
    uses of just those prompts.
    """
    limit = max(1, min(limit, MAX_PAGE_SIZE))
    offset = max(0, offset)
    scope = [Job.team_id == team_id, Job.deleted_at.is_(None)]
    if user_id is not None:
        scope.append(Job.user_id == user_id)
    if project_id is not None:
        scope.append(Job.project_id == project_id)
    if q and q.strip():
        scope.append(prompt_matches(q.strip()[:500]))
    # Step 1: the page's prompts with their figures. Plain aggregates only: ordered array
    # aggregates over every group made this several times slower at 100k jobs.
    last_used = func.max(Job.created_at)
    rows = db.execute(
        select(
            Job.prompt,
            func.count().label("uses"),
            last_used.label("last_used_at"),
            func.coalesce(func.sum(Job.cost_credits), 0).label("credits"),
        )
        .where(*scope)
        .group_by(Job.prompt)
        .order_by(last_used.desc(), Job.prompt)
        .offset(offset)
        .limit(limit + 1)
    ).all()
    has_more = len(rows) > limit
    rows = rows[:limit]
    if not rows:
        return PromptPage(items=[], next_offset=None)

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
