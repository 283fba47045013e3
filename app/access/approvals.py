"""Approval requests: a refused request kept for a manager, and the jobs an approval creates.

A member whose request is refused for budget, quota or access reasons may ask for approval;
the request is kept with its validated parameters and estimated cost. A manager approves it
(its jobs are created at once, exempt from the rule that refused it, still held and charged
like any other and still under BFL's account cap) or declines it. The decision is one guarded
UPDATE from `pending`, so two managers deciding at once create the jobs once.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.access.models import ApprovalRequest, ApprovalStatus
from app.access.policy import AccessLimited
from app.access.schemas import ApprovalOut
from app.audit import service as audit
from app.auth.models import User
from app.costs.service import BudgetExceeded
from app.db import utcnow
from app.errors import FieldProblem, StudioError, status_for
from app.jobs import messages
from app.jobs.models import Job
from app.jobs.service import create_jobs

#: The refusals a manager may overrule.
APPROVABLE = (AccessLimited, BudgetExceeded)
NOTE_MAX_CHARS = 500


class ApprovalError(StudioError):
    """A refused approval operation: `not_found` (404), `forbidden` (403), else 409."""

    def __init__(self, message: str, code: str, field: str | None = None) -> None:
        fields = [FieldProblem(field=field, message=message)] if field else []
        super().__init__(status_for(code), code, message, fields)


def _trial(
    db: Session,
    *,
    team_id: uuid.UUID,
    user_id: uuid.UUID,
    model: str,
    params: Mapping[str, Any],
    count: int,
    reference_images: Sequence[bytes | str] = (),
    approved: bool,
    project_id: uuid.UUID | None = None,
) -> list[Job]:
    """Run `create_jobs` in a savepoint that is always rolled back, keeping no message."""
    held = messages.discard_pending(db)
    savepoint = db.begin_nested()
    try:
        return create_jobs(
            db,
            user_id=user_id,
            team_id=team_id,
            model=model,
            params=params,
            count=count,
            reference_images=reference_images,
            approved=approved,
            project_id=project_id,
        )
    finally:
        savepoint.rollback()
        messages.discard_pending(db)
        for message in held:
            messages.send_after_commit(db, message)


def ask(
    db: Session,
    *,
    team_id: uuid.UUID,
    user_id: uuid.UUID,
    model: str,
    params: Mapping[str, Any],
    count: int = 1,
    reference_images: Sequence[bytes | str] = (),
    project_id: uuid.UUID | None = None,
) -> ApprovalRequest:
    """Keep a request the studio refuses for budget, quota or access, for a manager to decide.

    The request is validated as `create_jobs` validates it (references are stored and kept
    by key), and its estimated cost in credits is kept with it. Raises what `create_jobs`
    raises for an invalid request, and ApprovalError `approval_not_needed` (409) when nothing
    refuses it (it can be generated directly).
    """
    trial = functools.partial(
        _trial,
        db,
        team_id=team_id,
        user_id=user_id,
        model=model,
        count=count,
        project_id=project_id,
    )
    jobs = trial(params=params, reference_images=reference_images, approved=True)
    kept = {k: v for k, v in jobs[0].params.items() if k != "seed"}
    if params.get("seed") not in (None, ""):
        kept["seed"] = jobs[0].seed
    estimate = sum((Decimal(j.estimated_credits or 0) for j in jobs), Decimal(0))
    try:
        trial(params=kept, approved=False)
    except APPROVABLE as refusal:
        request = ApprovalRequest(
            team_id=team_id,
            user_id=user_id,
            model=model,
            params=kept,
            count=count,
            estimated_credits=estimate,
            refused_code=refusal.code,
            refused_reason=refusal.message[:500],
            status=ApprovalStatus.PENDING.value,
            project_id=project_id,
        )
        db.add(request)
        db.flush()
        return request
    raise ApprovalError(
        "This request is within your limits, so it needs no approval; generate it directly.",
        "approval_not_needed",
    )


def get(
    db: Session,
    *,
    team_id: uuid.UUID,
    approval_id: uuid.UUID,
    caller_id: uuid.UUID,
    is_manager: bool,
) -> ApprovalRequest:
    """One request of the team: managers see any, members their own; else `not_found` (404)."""
    stmt = select(ApprovalRequest).where(
        ApprovalRequest.id == approval_id, ApprovalRequest.team_id == team_id
    )
    if not is_manager:
        stmt = stmt.where(ApprovalRequest.user_id == caller_id)
    request = db.scalars(stmt).first()
    if request is None:
        raise ApprovalError("No such approval request in your team.", "not_found")
    return request


def listing(
    db: Session,
    *,
    team_id: uuid.UUID,
    caller_id: uuid.UUID,
    is_manager: bool,
    status: str | None = None,
    limit: int = 100,
) -> list[tuple[ApprovalRequest, str]]:
    """Requests with their requester's name, newest first: the team's for managers, else own."""
    stmt = (
        select(ApprovalRequest, User.name)
        .join(User, User.id == ApprovalRequest.user_id)
        .where(ApprovalRequest.team_id == team_id)
        .order_by(ApprovalRequest.created_at.desc())
        .limit(limit)
    )
    if not is_manager:
        stmt = stmt.where(ApprovalRequest.user_id == caller_id)
    if status is not None:
        stmt = stmt.where(ApprovalRequest.status == status)
    return [(request, name) for request, name in db.execute(stmt).all()]


def _claim(
    db: Session,
    team_id: uuid.UUID,
    approval_id: uuid.UUID,
    status: ApprovalStatus,
    by: User,
    note: str | None,
) -> ApprovalRequest:
    """Move a pending request to `status`: one guarded UPDATE, so only one decision wins."""
    if note is not None and len(note) > NOTE_MAX_CHARS:
        raise ApprovalError(
            f"The note is longer than {NOTE_MAX_CHARS} characters.", "invalid_request", "note"
        )
    decided = db.scalar(
        update(ApprovalRequest)
        .where(
            ApprovalRequest.id == approval_id,
            ApprovalRequest.team_id == team_id,
            ApprovalRequest.status == ApprovalStatus.PENDING.value,
        )
        .values(status=status.value, decided_by_id=by.id, decided_at=utcnow(), note=note or None)
        .returning(ApprovalRequest.id)
    )
    if decided is None:
        existing = db.scalar(
            select(ApprovalRequest.status).where(
                ApprovalRequest.id == approval_id, ApprovalRequest.team_id == team_id
            )
        )
        if existing is None:
            raise ApprovalError("No such approval request in your team.", "not_found")
        raise ApprovalError(f"This request was already {existing}.", "already_decided")
    request = db.get(ApprovalRequest, approval_id, populate_existing=True)
    assert request is not None
    return request


def decide(
    db: Session,
    *,
    team_id: uuid.UUID,
    approval_id: uuid.UUID,
    by: User,
    approve: bool,
    note: str | None = None,
) -> tuple[ApprovalRequest, list[Job]]:
    """Approve (create the request's jobs now) or decline a pending request, audited.

    The jobs belong to the requester, skip the access rules and budgets that refused them,
    and are held, charged and dispatched like any other. Raises ApprovalError `not_found`
    (404) or `already_decided` (409), and what `create_jobs` raises for a request no longer
    valid (the decision is then rolled back with it).
    """
    status = ApprovalStatus.APPROVED if approve else ApprovalStatus.DECLINED
    request = _claim(db, team_id, approval_id, status, by, note)
    jobs: list[Job] = []
    if approve:
        jobs = create_jobs(
            db,
            user_id=request.user_id,
            team_id=team_id,
            model=request.model,
            params=request.params,
            count=request.count,
            approved=True,
            project_id=request.project_id,
        )
        request.batch_id = jobs[0].batch_id
        db.flush()
    audit.record(
        db,
        team_id=team_id,
        actor_id=by.id,
        actor_email=by.email,
        action=f"approval.{status.value}",
        target_type="approval_request",
        target_id=request.id,
        before={"status": ApprovalStatus.PENDING.value},
        after={
            "status": status.value,
            "note": request.note,
            "batch_id": request.batch_id,
            "estimated_credits": request.estimated_credits,
        },
    )
    return request, jobs


def batch_jobs(db: Session, request: ApprovalRequest) -> list[Job]:
    """The jobs an approved request created, in batch order (none before approval)."""
    if request.batch_id is None:
        return []
    return list(
        db.scalars(
            select(Job)
            .where(Job.team_id == request.team_id, Job.batch_id == request.batch_id)
            .order_by(Job.batch_index)
        )
    )


def view(db: Session, request: ApprovalRequest, requester: str) -> ApprovalOut:
    """The API's and the pages' view of a request, with the ids of the jobs it created."""
    return ApprovalOut(
        id=request.id,
        status=ApprovalStatus(request.status).value,
        user_id=request.user_id,
        requester=requester,
        model=request.model,
        prompt=str(request.params.get("prompt", "")),
        count=request.count,
        project_id=request.project_id,
        params=dict(request.params),
        estimated_credits=request.estimated_credits,
        refused_code=request.refused_code,
        refused_reason=request.refused_reason,
        note=request.note,
        decided_by_id=request.decided_by_id,
        decided_at=request.decided_at,
        created_at=request.created_at,
        job_ids=[job.id for job in batch_jobs(db, request)],
    )


def requester_name(db: Session, request: ApprovalRequest) -> str:
    """The name of the person who asked."""
    return db.scalar(select(User.name).where(User.id == request.user_id)) or ""
