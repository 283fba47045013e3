"""JSON API for the team's queue and batches: where each queued job stands and why, pausing,
resuming and reordering jobs, batches and the whole team's queue, batch cancel and retry."""

from __future__ import annotations

import uuid
from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from app.auth.deps import Actor, ChangingActor, CurrentActor
from app.db import utcnow
from app.deps import SessionDep
from app.errors import error_responses
from app.jobs.api import jobs_out
from app.jobs.queue import (
    Caller,
    Move,
    batch_jobs,
    cancel_batch,
    move_batch,
    move_job,
    pause_team,
    retry_batch,
)
from app.jobs.queue_view import REASONS, QueueEntry, team_queue
from app.jobs.schemas import JobBatchOut, JobOut
from app.settings import get_settings
from app.timestamps import UtcDatetime

router = APIRouter(tags=["queue"])

Reason = Literal[
    "paused",
    "team_paused",
    "bfl_outage",
    "rate_limited",
    "retry_later",
    "model_cap",
    "account_cap",
    "fair_share",
    "starting",
]
MoveName = Literal["pause", "resume", "front", "back"]


class QueueEntryOut(BaseModel):
    """One queued job of the team and where it stands."""

    job_id: uuid.UUID
    batch_id: uuid.UUID | None
    batch_index: int
    user_id: uuid.UUID
    owner: str = Field(description="Name of the person who queued it.")
    model: str
    prompt: str
    position: int | None = Field(
        description="1 = sent next, counting every team's jobs (they share BFL's cap); "
        "null while the job or the team's queue is paused."
    )
    others_ahead: int = Field(description="Other people's jobs ahead of it.")
    estimated_start_at: UtcDatetime | None = Field(
        description="When it should be sent, from the cap, the observed time at BFL and its "
        "position; null while paused or BFL is unreachable."
    )
    reason: Reason = Field(description="Why it waits (see `reason_text`).")
    reason_text: str
    paused: bool = Field(description="Held back by its owner or a manager.")
    front: bool = Field(description="Moved to the front by a manager.")

    @classmethod
    def of(cls, entry: QueueEntry) -> QueueEntryOut:
        job = entry.job
        return cls(
            job_id=job.id,
            batch_id=job.batch_id,
            batch_index=job.batch_index,
            user_id=job.user_id,
            owner=entry.owner_name,
            model=job.model,
            prompt=job.prompt,
            position=entry.position,
            others_ahead=entry.others_ahead,
            estimated_start_at=entry.estimated_start,
            reason=entry.reason,
            reason_text=entry.reason_text,
            paused=job.paused_at is not None,
            front=job.queue_front,
        )


class QueueOut(BaseModel):
    """The team's queue, in the order it will be sent (paused jobs last)."""

    paused: bool = Field(description="A manager paused the team's whole queue.")
    paused_at: UtcDatetime | None
    paused_by: str | None
    active_task_cap: int = Field(description="Tasks the BFL account may have at once now.")
    active_tasks: int = Field(description="Tasks of the studio at BFL now (every team).")
    observed_seconds_at_bfl: float = Field(description="Mean seconds a recent job spent at BFL.")
    reasons: dict[str, str] = Field(description="Every `reason` code and what it means.")
    items: list[QueueEntryOut]


class BatchOut(BaseModel):
    """One batch (the images of one request) and its jobs in batch order."""

    id: uuid.UUID
    jobs: list[JobOut]


class BatchActionOut(BaseModel):
    """What an action on a batch did: the jobs it changed and those left as they were (sent
    to BFL already, or ended)."""

    changed: list[uuid.UUID]
    unchanged: list[uuid.UUID]
    jobs: list[JobOut]


def _caller(actor: Actor) -> Caller:
    return Caller(
        user_id=actor.user_id,
        team_id=actor.team_id,
        is_manager=actor.is_manager,
        email=actor.user.email,
    )


def _queue_out(db: SessionDep, actor: Actor) -> QueueOut:
    view = team_queue(db, get_settings(), team_id=actor.team_id, now=utcnow())
    return QueueOut(
        paused=view.paused_at is not None,
        paused_at=view.paused_at,
        paused_by=view.paused_by,
        active_task_cap=view.cap,
        active_tasks=view.active,
        observed_seconds_at_bfl=round(view.latency_s, 2),
        reasons=dict(REASONS),
        items=[QueueEntryOut.of(e) for e in view.entries],
    )


@router.get("/queue", response_model=QueueOut, summary="The team's queued jobs and why they wait")
def get_queue(actor: CurrentActor, db: SessionDep) -> QueueOut:
    return _queue_out(db, actor)


@router.post(
    "/queue/pause",
    response_model=QueueOut,
    summary="Pause the team's queue (managers): jobs at BFL finish, nothing new is sent",
    responses=error_responses(403),
)
def pause_queue(actor: ChangingActor, db: SessionDep) -> QueueOut:
    pause_team(db, _caller(actor), paused=True)
    return _queue_out(db, actor)


@router.post(
    "/queue/resume",
    response_model=QueueOut,
    summary="Resume the team's queue (managers)",
    responses=error_responses(403),
)
def resume_queue(actor: ChangingActor, db: SessionDep) -> QueueOut:
    pause_team(db, _caller(actor), paused=False)
    return _queue_out(db, actor)


@router.post(
    "/jobs/{job_id}/queue/{move}",
    response_model=JobOut,
    summary="Pause, resume, or move a queued job to the front (managers) or back",
    responses=error_responses(403, 404, 409, 422),
)
def move_one(job_id: uuid.UUID, move: MoveName, actor: ChangingActor, db: SessionDep) -> JobOut:
    job = move_job(db, _caller(actor), job_id, Move(move))
    return jobs_out(db, actor, [job.id])[0]


@router.get(
    "/batches/{batch_id}",
    response_model=BatchOut,
    summary="One batch and its jobs",
    responses=error_responses(404, 422),
)
def get_batch(batch_id: uuid.UUID, actor: CurrentActor, db: SessionDep) -> BatchOut:
    jobs = batch_jobs(db, team_id=actor.team_id, batch_id=batch_id)
    return BatchOut(id=batch_id, jobs=jobs_out(db, actor, [j.id for j in jobs]))


@router.post(
    "/batches/{batch_id}/queue/{move}",
    response_model=BatchActionOut,
    summary="Pause, resume, or move a batch's queued jobs to the front (managers) or back",
    responses=error_responses(403, 404, 409, 422),
)
def move_many(
    batch_id: uuid.UUID, move: MoveName, actor: ChangingActor, db: SessionDep
) -> BatchActionOut:
    done = move_batch(db, _caller(actor), batch_id, Move(move))
    return _batch_action(db, actor, batch_id, done.changed, done.unchanged)


@router.post(
    "/batches/{batch_id}/cancel",
    response_model=BatchActionOut,
    summary="Cancel every queued job of a batch (jobs at BFL finish)",
    responses=error_responses(403, 404, 409, 422),
)
def cancel_many(batch_id: uuid.UUID, actor: ChangingActor, db: SessionDep) -> BatchActionOut:
    done = cancel_batch(db, _caller(actor), batch_id)
    return _batch_action(db, actor, batch_id, done.changed, done.unchanged)


@router.post(
    "/batches/{batch_id}/retry",
    status_code=201,
    response_model=JobBatchOut,
    summary="Queue a batch's failed, moderated and cancelled jobs again, as one new batch",
    responses=error_responses(402, 404, 409, 422),
)
def retry_many(batch_id: uuid.UUID, actor: ChangingActor, db: SessionDep) -> JobBatchOut:
    jobs = retry_batch(db, _caller(actor), batch_id)
    return JobBatchOut(jobs=jobs_out(db, actor, [j.id for j in jobs]))


def _batch_action(
    db: SessionDep,
    actor: Actor,
    batch_id: uuid.UUID,
    changed: list[uuid.UUID],
    unchanged: list[uuid.UUID],
) -> BatchActionOut:
    jobs = batch_jobs(db, team_id=actor.team_id, batch_id=batch_id)
    return BatchActionOut(
        changed=changed, unchanged=unchanged, jobs=jobs_out(db, actor, [j.id for j in jobs])
    )
