"""Access rules, quotas and approval requests as JSON under /api/v1."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Body, Query
from sqlalchemy.orm import Session

from app.access import approvals, policy
from app.access.schemas import (
    AccessRuleIn,
    AccessRuleOut,
    ApprovalOut,
    DecisionIn,
    QuotaIn,
    QuotaOut,
)
from app.auth.deps import ChangingActor, CurrentActor, ManagerActor
from app.deps import SessionDep
from app.errors import error_responses
from app.jobs.api import JobCreate, JobCreateForm, JobRequestDep

router = APIRouter(tags=["access"])


def rule_views(db: Session, team_id: uuid.UUID) -> list[AccessRuleOut]:
    """The team's rules as the API shows them."""
    return [
        AccessRuleOut(
            role=rule.role,
            user_id=rule.user_id,
            name=name,
            allowed_models=rule.allowed_models,
            max_megapixels=rule.max_megapixels,
            max_side=rule.max_side,
            max_count=rule.max_count,
        )
        for rule, name in policy.rules(db, team_id)
    ]


@router.get("/access/rules", response_model=list[AccessRuleOut], responses=error_responses(403))
def list_rules(actor: ManagerActor, db: SessionDep) -> list[AccessRuleOut]:
    """The team's access rules, per role and per person (managers)."""
    return rule_views(db, actor.team_id)


@router.put(
    "/access/rules", response_model=list[AccessRuleOut], responses=error_responses(403, 404, 422)
)
def put_rule(body: AccessRuleIn, actor: ManagerActor, db: SessionDep) -> list[AccessRuleOut]:
    """Set a role's or a person's limits (all limits left out removes the rule); audited."""
    policy.set_rule(
        db,
        team_id=actor.team_id,
        by=actor.user,
        role=body.role,
        user_id=body.user_id,
        allowed_models=body.allowed_models,
        max_megapixels=body.max_megapixels,
        max_side=body.max_side,
        max_count=body.max_count,
    )
    return rule_views(db, actor.team_id)


@router.put("/access/quotas", response_model=QuotaOut, responses=error_responses(403, 404, 422))
def put_quota(body: QuotaIn, actor: ManagerActor, db: SessionDep) -> QuotaOut:
    """Set (null: remove) a person's monthly credit quota; audited."""
    policy.set_quota(
        db,
        team_id=actor.team_id,
        by=actor.user,
        user_id=body.user_id,
        monthly_credits=body.monthly_credits,
    )
    return QuotaOut(user_id=body.user_id, monthly_credits=body.monthly_credits)


_ASK_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": JobCreate.model_json_schema()},
            "multipart/form-data": {"schema": JobCreateForm.model_json_schema()},
        },
    }
}


@router.post(
    "/approvals",
    status_code=201,
    response_model=ApprovalOut,
    summary="Ask a manager to approve a refused request",
    openapi_extra=_ASK_BODY,
    responses=error_responses(400, 404, 409, 413, 415, 422),
)
def ask(actor: ChangingActor, job_request: JobRequestDep, db: SessionDep) -> ApprovalOut:
    """The body of POST /api/v1/jobs; kept when budgets, quotas or access rules refuse it."""
    request = approvals.ask(
        db,
        team_id=actor.team_id,
        user_id=actor.user_id,
        model=job_request.model,
        params=job_request.params,
        count=job_request.count,
        reference_images=job_request.reference_images,
        project_id=job_request.project_id,
    )
    return approvals.view(db, request, actor.user.name)


@router.get("/approvals", response_model=list[ApprovalOut], responses=error_responses(422))
def list_approvals(
    actor: CurrentActor,
    db: SessionDep,
    status: Annotated[Literal["pending", "approved", "declined"] | None, Query()] = None,
) -> list[ApprovalOut]:
    """Requests newest first: the team's for managers, the caller's own for members."""
    rows = approvals.listing(
        db,
        team_id=actor.team_id,
        caller_id=actor.user_id,
        is_manager=actor.is_manager,
        status=status,
    )
    return [approvals.view(db, request, name) for request, name in rows]


@router.get(
    "/approvals/{approval_id}", response_model=ApprovalOut, responses=error_responses(404, 422)
)
def get_approval(approval_id: uuid.UUID, actor: CurrentActor, db: SessionDep) -> ApprovalOut:
    """One request and its outcome (the requester's own, or any for managers)."""
    request = approvals.get(
        db,
        team_id=actor.team_id,
        approval_id=approval_id,
        caller_id=actor.user_id,
        is_manager=actor.is_manager,
    )
    return approvals.view(db, request, approvals.requester_name(db, request))


def _decide(
    db: Session, actor: ManagerActor, approval_id: uuid.UUID, approve: bool, body: DecisionIn | None
) -> ApprovalOut:
    request, _jobs = approvals.decide(
        db,
        team_id=actor.team_id,
        approval_id=approval_id,
        by=actor.user,
        approve=approve,
        note=body.note if body is not None else None,
    )
    return approvals.view(db, request, approvals.requester_name(db, request))


@router.post(
    "/approvals/{approval_id}/approve",
    response_model=ApprovalOut,
    responses=error_responses(403, 404, 409, 422),
)
def approve(
    approval_id: uuid.UUID,
    actor: ManagerActor,
    db: SessionDep,
    body: Annotated[DecisionIn | None, Body()] = None,
) -> ApprovalOut:
    """Approve: the request's jobs are queued now, once; audited."""
    return _decide(db, actor, approval_id, True, body)


@router.post(
    "/approvals/{approval_id}/decline",
    response_model=ApprovalOut,
    responses=error_responses(403, 404, 409, 422),
)
def decline(
    approval_id: uuid.UUID,
    actor: ManagerActor,
    db: SessionDep,
    body: Annotated[DecisionIn | None, Body()] = None,
) -> ApprovalOut:
    """Decline with an optional note; audited."""
    return _decide(db, actor, approval_id, False, body)
