"""Cost pages: the managers' dashboard, each member's own spend, budget forms and CSV export."""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from app.auth.deps import Actor, ChangingActor, CurrentActor, ManagerActor
from app.costs import service
from app.costs.export import csv_response, projects_csv_response
from app.costs.params import (
    EndQuery,
    FromQuery,
    ModelQuery,
    ProjectQuery,
    StartQuery,
    ToQuery,
    UserQuery,
    caller_scope,
)
from app.costs.review import cost_review, review_period
from app.costs.schemas import CostSummary
from app.db import utcnow
from app.deps import SessionDep
from app.projects.service import list_projects
from app.templating import templates

router = APIRouter(tags=["costs pages"])

#: Largest monthly budget the ledger's numeric columns hold comfortably.
MAX_BUDGET = Decimal("99999999")


def _chart_data(summary: CostSummary) -> dict[str, Any]:
    """Plain numbers for Chart.js; the page shows the same figures in tables."""
    return {
        "by_day": {
            "labels": [d.day.isoformat() for d in summary.by_day],
            "credits": [float(d.credits) for d in summary.by_day],
        },
        "by_person": {
            "labels": [p.name for p in summary.by_person],
            "credits": [float(p.credits) for p in summary.by_person],
        },
        "by_model": {
            "labels": [m.model for m in summary.by_model],
            "credits": [float(m.credits) for m in summary.by_model],
        },
    }


def _page(
    request: Request,
    db: SessionDep,
    actor: Actor,
    period_name: str | None,
    *,
    budget_error: str | None = None,
    status_code: int = 200,
    project: uuid.UUID | None = None,
) -> Response:
    period = service.report_period(period_name)
    me = service.Scope(actor.team_id, actor.user_id)
    context: dict[str, Any] = {
        "actor": actor,
        "period_name": "30d" if period_name == "30d" else "month",
        "month": service.this_month(),
        "today": utcnow().date(),
        "mine": service.my_spend(db, team_id=actor.team_id, user_id=actor.user_id),
        "saved": request.query_params.get("saved") == "1",
        "budget_error": budget_error,
    }
    if actor.is_manager:
        scope = caller_scope(db, actor, user_id=None, project=project)
        summary = service.cost_summary(db, scope, period)
        context |= {
            "summary": summary,
            "month_total": service.spend_total(db, scope, service.this_month()),
            "days30_total": service.spend_total(db, scope, service.last_days(30)),
            "outlook": service.credit_outlook(db),
            "budgets": service.budget_lines(db, actor.team_id),
            "members": service.team_members(db, actor.team_id),
            "projects": list_projects(db, team_id=actor.team_id),
            "chart_data": _chart_data(summary),
        }
        template = "costs/dashboard.html"
    else:
        summary = service.cost_summary(db, me, period)
        context |= {"summary": summary, "chart_data": _chart_data(summary)}
        template = "costs/mine.html"
    return templates.TemplateResponse(request, template, context, status_code=status_code)


@router.get("/costs", response_class=HTMLResponse)
def costs_page(
    request: Request,
    actor: CurrentActor,
    db: SessionDep,
    period: Annotated[Literal["month", "30d"] | None, Query()] = None,
    project: ProjectQuery = None,
) -> Response:
    """Managers see the team's dashboard (of one project with `project`); members see only
    their own spend and budget."""
    return _page(request, db, actor, period, project=project)


def _parse_budget(raw: str) -> Decimal | None:
    """The monthly credits typed in the form; blank removes the budget."""
    text = raw.strip().replace(",", "")
    if not text:
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ValueError("Monthly credits must be a number, like 500 or 1250.5.") from None
    if not value.is_finite() or value < 0:
        raise ValueError("Monthly credits must be zero or more.")
    if value > MAX_BUDGET:
        raise ValueError(f"Monthly credits can be at most {MAX_BUDGET:,}.")
    if value != value.quantize(Decimal("0.0001")):
        raise ValueError("Monthly credits can have at most 4 decimals.")
    return value


@router.post("/costs/budgets", response_class=HTMLResponse)
def save_budget(
    request: Request,
    actor: ManagerActor,
    changing: ChangingActor,
    db: SessionDep,
    user_id: Annotated[str, Form()] = "",
    monthly_credits: Annotated[str, Form()] = "",
    project_id: Annotated[str, Form()] = "",
) -> Response:
    """Set or remove the team's budget (no person or project chosen), one member's or one
    project's (managers); audited."""
    try:
        person = uuid.UUID(user_id) if user_id.strip() else None
        project = uuid.UUID(project_id) if project_id.strip() else None
    except ValueError:
        return _page(
            request,
            db,
            actor,
            None,
            budget_error="Choose a person or a project from the lists.",
            status_code=422,
        )
    if person is not None and project is not None:
        return _page(
            request,
            db,
            actor,
            None,
            budget_error="Choose a person or a project, not both.",
            status_code=422,
        )
    try:
        credits = _parse_budget(monthly_credits)
    except ValueError as exc:
        return _page(request, db, actor, None, budget_error=str(exc), status_code=422)
    service.set_budget(
        db,
        team_id=actor.team_id,
        user_id=person,
        project_id=project,
        monthly_credits=credits,
        set_by=changing.user_id,
    )
    return RedirectResponse("/costs?saved=1#budgets", status_code=303)


@router.get("/costs/export.csv")
def export_csv(
    actor: CurrentActor,
    db: SessionDep,
    start: StartQuery = None,
    end: EndQuery = None,
    user_id: UserQuery = None,
    model: ModelQuery = None,
    project: ProjectQuery = None,
    group: Annotated[Literal["project"] | None, Query()] = None,
) -> Response:
    """The ledger of a date range as CSV (with group=project: per-project totals); members get
    only their own rows."""
    scope = caller_scope(db, actor, user_id=user_id, project=project)
    period = service.report_period(None, start, end)
    if group == "project":
        return projects_csv_response(scope, period, model or None)
    return csv_response(scope, period, model or None)


@router.get("/costs/review", response_class=HTMLResponse)
def review_page(
    request: Request,
    actor: CurrentActor,
    db: SessionDep,
    first: FromQuery = None,
    last: ToQuery = None,
    project: ProjectQuery = None,
) -> Response:
    """Any date range against the one before it, trends per project and model, and forecasts:
    the team's for managers, one's own for members."""
    scope = caller_scope(db, actor, user_id=None, project=project)
    review = cost_review(db, scope, review_period(first, last))
    context = {
        "actor": actor,
        "review": review,
        "projects": list_projects(db, team_id=actor.team_id),
        "first": review.period.start.date(),
        "last": (review.period.end - timedelta(days=1)).date(),
        "project": project,
    }
    return templates.TemplateResponse(request, "costs/review.html", context)
