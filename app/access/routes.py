"""Pages for access: managers' rules and quotas (/access), and approval requests (/approvals)."""

from __future__ import annotations

import uuid
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm import Session

from app.access import approvals, policy
from app.access.models import ApprovalStatus
from app.access.schemas import MAX_RULE_COUNT, MAX_RULE_SIDE
from app.auth.deps import Actor, ChangingActor, CurrentActor, ManagerActor
from app.bfl.catalogue import list_models
from app.costs import service as costs
from app.deps import SessionDep
from app.errors import FieldProblem, StudioError
from app.jobs.routes import read_generate_form, request_params
from app.limits import read_form
from app.templating import templates

router = APIRouter(tags=["access pages"])


def _invalid(field: str, message: str) -> StudioError:
    return StudioError(
        422, "invalid_request", message, [FieldProblem(field=field, message=message)]
    )


def _number(raw: str, field: str, kind: type[int] | type[Decimal], top: int) -> Any:
    """A positive number typed in a form field; blank is None (no limit)."""
    text = raw.strip().replace(",", "")
    if not text:
        return None
    try:
        value = kind(text)
    except (ValueError, InvalidOperation):
        raise _invalid(field, f"{field} must be a number, or blank for no limit.") from None
    if isinstance(value, Decimal) and (not value.is_finite() or value != round(value, 2)):
        raise _invalid(field, f"{field} must be a number with at most 2 decimals.")
    if not 0 < value <= top:
        raise _invalid(field, f"{field} must be more than 0 and at most {top}.")
    return value


def _access_page(request: Request, db: Session, actor: Actor) -> Response:
    context: dict[str, Any] = {
        "actor": actor,
        "rules": policy.rules(db, actor.team_id),
        "budgets": costs.budget_lines(db, actor.team_id),
        "members": costs.team_members(db, actor.team_id),
        "models": list_models(),
        "saved": request.query_params.get("saved") == "1",
    }
    return templates.TemplateResponse(request, "access/rules.html", context)


@router.get("/access", response_class=HTMLResponse, summary="Access rules and quotas")
def access_page(request: Request, actor: ManagerActor, db: SessionDep) -> Response:
    """Who may use which models, how large and how many, and each person's quota (managers)."""
    return _access_page(request, db, actor)


@router.post("/access/rules", response_class=HTMLResponse, summary="Save an access rule")
async def save_rule(request: Request, actor: ManagerActor, db: SessionDep) -> Response:
    """Set a role's or a person's rule from the form; blank limits are no limit."""
    form = await read_form(request)
    subject = str(form.get("subject") or "")
    role: str | None = None
    user_id: uuid.UUID | None = None
    if subject.startswith("role:"):
        role = subject.removeprefix("role:")
    else:
        try:
            user_id = uuid.UUID(subject)
        except ValueError:
            raise _invalid("subject", "Choose a role or a person from the list.") from None
    models: list[str] | None = None
    if form.get("restrict_models"):
        models = [str(m) for m in form.getlist("allowed_models")]
    policy.set_rule(
        db,
        team_id=actor.team_id,
        by=actor.user,
        role=role,
        user_id=user_id,
        allowed_models=models,
        max_megapixels=_number(
            str(form.get("max_megapixels") or ""), "max_megapixels", Decimal, 100
        ),
        max_side=_number(str(form.get("max_side") or ""), "max_side", int, MAX_RULE_SIDE),
        max_count=_number(str(form.get("max_count") or ""), "max_count", int, MAX_RULE_COUNT),
    )
    return RedirectResponse("/access?saved=1", status_code=303)


@router.post("/access/quotas", response_class=HTMLResponse, summary="Save a monthly quota")
def save_quota(
    actor: ManagerActor,
    db: SessionDep,
    user_id: Annotated[str, Form()] = "",
    monthly_credits: Annotated[str, Form()] = "",
) -> Response:
    """Set (blank: remove) a person's monthly credit quota."""
    try:
        person = uuid.UUID(user_id)
    except ValueError:
        raise _invalid("user_id", "Choose a person from the list.") from None
    credits = _number(monthly_credits, "monthly_credits", Decimal, 10_000_000)
    policy.set_quota(
        db, team_id=actor.team_id, by=actor.user, user_id=person, monthly_credits=credits
    )
    return RedirectResponse("/access?saved=1#quotas", status_code=303)


@router.get("/approvals", response_class=HTMLResponse, summary="Approval requests")
def approvals_page(request: Request, actor: CurrentActor, db: SessionDep) -> Response:
    """Managers see the team's requests, pending first; members their own and the outcome."""
    rows = approvals.listing(
        db, team_id=actor.team_id, caller_id=actor.user_id, is_manager=actor.is_manager
    )
    views = [approvals.view(db, request, name) for request, name in rows]
    context = {
        "actor": actor,
        "pending": [v for v in views if v.status == ApprovalStatus.PENDING.value],
        "decided": [v for v in views if v.status != ApprovalStatus.PENDING.value],
        "asked": request.query_params.get("asked"),
    }
    return templates.TemplateResponse(request, "access/approvals.html", context)


@router.post("/approvals", response_class=HTMLResponse, summary="Ask for approval")
async def ask(request: Request, actor: ChangingActor, db: SessionDep) -> Response:
    """The generate form's request, kept for a manager when budgets or rules refuse it."""
    form = await read_form(request)
    state = read_generate_form(form, actor.team_id)
    params, count = request_params(state)
    if count is None:
        raise _invalid("count", "count must be a whole number.")
    project = state.get("project_id").strip()
    try:
        project_id = uuid.UUID(project) if project else None
    except ValueError:
        raise _invalid("project_id", "Choose one of the team's projects.") from None
    kept = approvals.ask(
        db,
        team_id=actor.team_id,
        user_id=actor.user_id,
        model=state.get("model"),
        params=params,
        count=count,
        project_id=project_id,
    )
    target = f"/approvals?asked={kept.id}"
    if request.headers.get("hx-request"):
        return Response(status_code=204, headers={"HX-Redirect": target})
    return RedirectResponse(target, status_code=303)


async def _decide(
    request: Request, actor: Actor, db: Session, approval_id: str, approve: bool
) -> Response:
    form = await read_form(request)
    try:
        ident = uuid.UUID(approval_id)
    except ValueError:
        raise approvals.ApprovalError(
            "No such approval request in your team.", "not_found"
        ) from None
    note = str(form.get("note") or "").strip() or None
    approvals.decide(
        db, team_id=actor.team_id, approval_id=ident, by=actor.user, approve=approve, note=note
    )
    return RedirectResponse("/approvals", status_code=303)


@router.post("/approvals/{approval_id}/approve", response_class=HTMLResponse, summary="Approve")
async def approve(
    request: Request, approval_id: str, actor: ManagerActor, db: SessionDep
) -> Response:
    """Approve a request: its jobs are queued at once."""
    return await _decide(request, actor, db, approval_id, True)


@router.post("/approvals/{approval_id}/decline", response_class=HTMLResponse, summary="Decline")
async def decline(
    request: Request, approval_id: str, actor: ManagerActor, db: SessionDep
) -> Response:
    """Decline a request, with an optional note for the requester."""
    return await _decide(request, actor, db, approval_id, False)
