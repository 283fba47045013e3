"""The cost review as JSON under /api/v1: summaries, the ledger, budgets and one's own spend."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query

from app.auth.deps import ChangingActor, CurrentActor, ManagerActor
from app.costs import service
from app.costs.export import csv_response, projects_csv_response
from app.costs.params import (
    EndQuery,
    FromQuery,
    ModelQuery,
    PeriodQuery,
    ProjectQuery,
    StartQuery,
    ToQuery,
    UserQuery,
    caller_scope,
)
from app.costs.review import cost_review, review_period
from app.costs.schemas import (
    BudgetIn,
    BudgetLine,
    CostReview,
    CostSummary,
    CreditOutlook,
    LedgerPage,
    MySpend,
)
from app.deps import SessionDep
from app.errors import ErrorResponse
from app.settings import get_settings

router = APIRouter(tags=["costs"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "Not signed in"},
    403: {"model": ErrorResponse, "description": "Not allowed for this role"},
    404: {"model": ErrorResponse, "description": "Not found in the caller's team"},
    422: {"model": ErrorResponse, "description": "Invalid parameters; `fields` names them"},
}


@router.get("/costs/summary", response_model=CostSummary, responses=_ERRORS)
def cost_summary(
    actor: CurrentActor,
    db: SessionDep,
    period: PeriodQuery = None,
    start: StartQuery = None,
    end: EndQuery = None,
    user_id: UserQuery = None,
    project: ProjectQuery = None,
) -> CostSummary:
    """The dashboard's figures: the team's for managers, the caller's own for members;
    `by_project` gives the spend of each project."""
    scope = caller_scope(db, actor, user_id=user_id, project=project)
    # Its figures include a series per day: a range is bounded like the cost review's.
    limit = get_settings().COST_REVIEW_MAX_DAYS
    return service.cost_summary(
        db, scope, service.report_period(period, start, end, max_days=limit)
    )


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
    project: ProjectQuery = None,
    format: Annotated[
        Literal["json", "csv", "projects.csv"],
        Query(description="json, csv (the rows) or projects.csv (per-project totals)"),
    ] = "json",
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> Any:
    """Ledger rows of a date range, oldest first; `total` and `by_project` cover the whole
    range, every page."""
    scope = caller_scope(db, actor, user_id=user_id, project=project)
    period = service.report_period(None, start, end)
    if format == "csv":
        return csv_response(scope, period, model)
    if format == "projects.csv":
        return projects_csv_response(scope, period, model)
    rows, next_offset = service.ledger_page(db, scope, period, model, limit=limit, offset=offset)
    return LedgerPage(
        start=period.first_day,
        end=period.last_day,
        user_id=scope.user_id,
        project_id=scope.project_id,
        model=model,
        total=service.spend_total(db, scope, period, model),
        by_project=service.spend_by_project(db, scope, period, model),
        rows=rows,
        next_offset=next_offset,
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
    """Set the team's (neither id), one member's (user_id) or one project's (project_id)
    monthly budget in credits; null credits removes it. Each change is audited."""
    service.set_budget(
        db,
        team_id=actor.team_id,
        user_id=body.user_id,
        project_id=body.project_id,
        monthly_credits=body.monthly_credits,
        set_by=changing.user_id,
    )
    return service.budget_lines(db, actor.team_id)


@router.get("/costs/balance", response_model=CreditOutlook, responses=_ERRORS)
def credit_balance(actor: ManagerActor, db: SessionDep) -> CreditOutlook:
    """The BFL account's last known balance and how many days it lasts (managers)."""
    return service.credit_outlook(db)


@router.get("/costs/review", response_model=CostReview, responses=_ERRORS)
def review(
    actor: CurrentActor,
    db: SessionDep,
    first: FromQuery = None,
    last: ToQuery = None,
    user_id: UserQuery = None,
    project: ProjectQuery = None,
) -> CostReview:
    """Spend over any date range (`from`..`to`, UTC days) against the range of the same length
    before it; daily series per project and per model; burn rate and month-end forecast for the
    team (members: themselves) and each project."""
    scope = caller_scope(db, actor, user_id=user_id, project=project)
    return cost_review(db, scope, review_period(first, last))
