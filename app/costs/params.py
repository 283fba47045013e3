"""Report parameters the cost pages and the cost API share: query fields and whose figures."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Annotated, Any, Literal

from fastapi import Query
from pydantic import BeforeValidator, StringConstraints
from sqlalchemy.orm import Session

from app.auth.deps import Actor
from app.costs import service
from app.projects.service import get_project


def _blank_is_none(value: Any) -> Any:
    # HTML forms send empty fields as "": treat them as not given.
    return None if value == "" else value


Blank = BeforeValidator(_blank_is_none)

PeriodQuery = Annotated[
    Literal["month", "30d"] | None,
    Query(description="month: this calendar month (UTC); 30d: the last 30 days."),
]
StartQuery = Annotated[
    date | None, Blank, Query(description="First UTC day, YYYY-MM-DD (default: 1st of this month).")
]
EndQuery = Annotated[
    date | None, Blank, Query(description="Last UTC day, included (default: today).")
]
UserQuery = Annotated[
    uuid.UUID | None,
    Blank,
    Query(description="Only this person's charges; members may only give their own id."),
]
ModelQuery = Annotated[
    Annotated[str, StringConstraints(max_length=64)] | None,
    Blank,
    Query(description="Only this model's charges."),
]


ProjectQuery = Annotated[
    uuid.UUID | None,
    Blank,
    Query(description="Only this project's charges (an id from GET /api/v1/projects)."),
]


def caller_scope(
    db: Session, actor: Actor, *, user_id: uuid.UUID | None, project: uuid.UUID | None = None
) -> service.Scope:
    """Whose figures a report shows: the caller's own, or (managers) the team's or one person's;
    narrowed to one of the team's projects when `project` is given (404 for any other id)."""
    scope = service.report_scope(
        db,
        team_id=actor.team_id,
        caller_id=actor.user_id,
        is_manager=actor.is_manager,
        user_id=user_id,
    )
    if project is None:
        return scope
    get_project(db, team_id=actor.team_id, project_id=project)
    return service.Scope(scope.team_id, scope.user_id, project)


FromQuery = Annotated[
    date | None,
    Blank,
    Query(alias="from", description="First UTC day, YYYY-MM-DD (default: 1st of this month)."),
]
ToQuery = Annotated[
    date | None,
    Blank,
    Query(alias="to", description="Last UTC day, included (default: today)."),
]
