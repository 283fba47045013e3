"""The cost review as JSON under /api/v1: summaries, the ledger, budgets and one's own spend."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import date
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse
from pydantic import BeforeValidator, StringConstraints
from sqlalchemy.orm import Session

from app.auth.deps import Actor, ChangingActor, CurrentActor, ManagerActor
from app.costs import service
from app.costs.export import ledger_csv
from app.costs.schemas import (
    BudgetIn,
    BudgetLine,
    CostSummary,
    CreditOutlook,
    LedgerPage,
    MySpend,
)
from app.db import session_scope
from app.deps import SessionDep
from app.errors import ErrorResponse

router = APIRouter(tags=["costs"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "Not signed in"},
    403: {"model": ErrorResponse, "description": "Not allowed for this role"},
    404: {"model": ErrorResponse, "description": "Not found in the caller's team"},
    422: {"model": ErrorResponse, "description": "Invalid parameters; `fields` names them"},
}


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


def caller_scope(db: Session, actor: Actor, user_id: uuid.UUID | None) -> service.Scope:
    """Whose figures a report shows: the caller's own, or (managers) the team's or one person's."""
    return service.report_scope(
        db,
        team_id=actor.team_id,
        caller_id=actor.user_id,
        is_manager=actor.is_manager,
        user_id=user_id,
    )


@router.get("/costs/summary", response_model=CostSummary, responses=_ERRORS)
def cost_summary(
    actor: CurrentActor,
    db: SessionDep,
    period: PeriodQuery = None,
    start: StartQuery = None,
    end: EndQuery = None,
    user_id: UserQuery = None,
) -> CostSummary:
    """The dashboard's figures: the team's for managers, the caller's own for members."""
    scope = caller_scope(db, actor, user_id)
    return service.cost_summary(db, scope, service.report_period(period, start, end))


@router.get(
    "/costs/ledger",
    response_model=LedgerPage,
    responses={
        **_ERRORS,
        200: {"content": {"text/csv": {}}, "description": "JSON page, or CSV with format=csv"},
    },
)
def cost_ledger(
    actor: CurrentActor,
    db: SessionDep,
    start: StartQuery = None,
    end: EndQuery = None,
    user_id: UserQuery = None,
    model: ModelQuery = None,
    format: Annotated[Literal["json", "csv"], Query(description="json or csv")] = "json",
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> Any:
    """Ledger rows of a date range, oldest first; `total` covers the whole range, every page."""
    scope = caller_scope(db, actor, user_id)
    period = service.report_period(None, start, end)
    if format == "csv":
        return csv_response(scope, period, model)
    rows, next_offset = service.ledger_page(db, scope, period, model, limit=limit, offset=offset)
    return LedgerPage(
        start=period.first_day,
        end=period.last_day,
        user_id=scope.user_id,
        model=model,
        total=service.spend_total(db, scope, period, model),
        rows=rows,
        next_offset=next_offset,
    )


def csv_response(
    scope: service.Scope, period: service.Period, model: str | None
) -> StreamingResponse:
    """The filtered ledger as a CSV download, streamed from its own read-only session."""

    def chunks() -> Iterator[str]:
        # The request's session may be closed before the body is sent; use a session of our own.
        with session_scope() as db:
            yield from ledger_csv(service.iter_ledger(db, scope, period, model))

    name = f"ledger-{period.first_day.isoformat()}-{period.last_day.isoformat()}.csv"
    return StreamingResponse(
        chunks(),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="{name}"'},
    )


@router.get("/me/spend", response_model=MySpend, responses=_ERRORS)
def me_spend(actor: CurrentActor, db: SessionDep) -> MySpend:
    """The caller's own spend this month and over 30 days, budget and what is left."""
    return service.my_spend(db, team_id=actor.team_id, user_id=actor.user_id)


@router.get("/costs/budgets", response_model=list[BudgetLine], responses=_ERRORS)
def list_budgets(actor: ManagerActor, db: SessionDep) -> list[BudgetLine]:
    """The team's monthly budgets and this month's use of each (managers)."""
    return service.budget_lines(db, actor.team_id)


@router.put("/costs/budgets", response_model=list[BudgetLine], responses=_ERRORS)
def put_budget(
    body: BudgetIn, actor: ManagerActor, changing: ChangingActor, db: SessionDep
) -> list[BudgetLine]:
    """Set the team's (no user_id) or one member's monthly budget; null credits removes it."""
    service.set_budget(
        db,
        team_id=actor.team_id,
        user_id=body.user_id,
        monthly_credits=body.monthly_credits,
        set_by=changing.user_id,
    )
    return service.budget_lines(db, actor.team_id)


@router.get("/costs/balance", response_model=CreditOutlook, responses=_ERRORS)
def credit_balance(actor: ManagerActor, db: SessionDep) -> CreditOutlook:
    """The BFL account's last known balance and how many days it lasts (managers)."""
    return service.credit_outlook(db)
