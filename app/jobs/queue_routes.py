"""Pages for the team's queue and batches: the queue page (positions, estimated starts, why
each job waits), pausing, resuming and reordering, and the batch groups of the generate page."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from app.auth.deps import Actor, ActorView, ChangingActor, CurrentActor
from app.db import session_scope, utcnow
from app.deps import SessionDep
from app.errors import NotFound, StudioError, answer_refusals_with
from app.jobs import account
from app.jobs.models import Job
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
from app.jobs.queue_view import team_queue
from app.jobs.routes import card, group_cards, queue_entries
from app.settings import get_settings
from app.templating import error_page, templates

router = APIRouter(tags=["pages"])

_MOVES = {m.value: m for m in Move}
#: htmx event the queue page listens for to refresh its list at once.
_CHANGED = {"HX-Trigger": "queue-changed"}


def _caller(actor: Actor) -> Caller:
    return Caller(
        user_id=actor.user_id,
        team_id=actor.team_id,
        is_manager=actor.is_manager,
        email=actor.user.email,
    )


def _id(raw: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise NotFound(what) from None


def _move(raw: str) -> Move:
    if raw not in _MOVES:
        raise NotFound("That queue action")
    return _MOVES[raw]


def _notice(request: Request) -> Callable[[StudioError], Response | None]:
    """Refusals of queue actions: a 404 is the error page; others a notice (role=alert) in
    the page's notice area, so the list stays as it is."""

    def render(exc: StudioError) -> Response | None:
        if exc.status_code == 404:
            return error_page(request, 404, exc.message)
        return templates.TemplateResponse(
            request,
            "partials/notice.html",
            {"kind": "error", "message": exc.message},
            headers={"HX-Retarget": "#queue-notice", "HX-Reswap": "innerHTML"},
        )

    return render


def _queue_context(db: SessionDep, actor: Actor | ActorView) -> dict[str, object]:
    view = team_queue(db, get_settings(), team_id=actor.team_id, now=utcnow())
    return {"actor": actor, "view": view, "account": account.status(db, get_settings(), utcnow())}


@router.get("/queue", response_class=HTMLResponse, summary="The team's queue")
def queue_page(request: Request, actor: CurrentActor, db: SessionDep) -> Response:
    return templates.TemplateResponse(request, "queue/index.html", _queue_context(db, actor))


@router.get("/queue/rows", response_class=HTMLResponse, summary="The queue list (live fragment)")
def queue_rows(request: Request, actor: CurrentActor, db: SessionDep) -> Response:
    return templates.TemplateResponse(request, "queue/_rows.html", _queue_context(db, actor))


def _team(request: Request, actor: Actor, db: SessionDep, *, paused: bool) -> Response:
    answer_refusals_with(request, _notice(request))
    pause_team(db, _caller(actor), paused=paused)
    return templates.TemplateResponse(
        request, "queue/_rows.html", _queue_context(db, actor), headers=_CHANGED
    )


@router.post("/queue/pause", response_class=HTMLResponse, summary="Pause the team's queue")
def pause_queue(request: Request, actor: ChangingActor, db: SessionDep) -> Response:
    return _team(request, actor, db, paused=True)


@router.post("/queue/resume", response_class=HTMLResponse, summary="Resume the team's queue")
def resume_queue(request: Request, actor: ChangingActor, db: SessionDep) -> Response:
    return _team(request, actor, db, paused=False)


@router.post(
    "/jobs/{job_id}/queue/{move}", response_class=HTMLResponse, summary="Pause or move a job"
)
def queue_job(
    request: Request, job_id: str, move: str, actor: ChangingActor, db: SessionDep
) -> Response:
    jid, chosen = _id(job_id, "That job"), _move(move)
    answer_refusals_with(request, _notice(request))
    job = move_job(db, _caller(actor), jid, chosen)
    return _cards(request, actor, db, [job])


def _cards(request: Request, actor: Actor, db: SessionDep, jobs: list[Job]) -> Response:
    entries = queue_entries(db, actor.team_id, jobs)
    state = account.peek(db)
    cards = [card(j, state, entries.get(j.id)) for j in jobs]
    return templates.TemplateResponse(
        request, "jobs/_cards.html", {"actor": actor, "cards": cards}, headers=_CHANGED
    )


def _group(
    request: Request, actor: Actor, db: SessionDep, batch_id: uuid.UUID, extra: list[Job]
) -> Response:
    state = account.peek(db)
    jobs = batch_jobs(db, team_id=actor.team_id, batch_id=batch_id)
    entries = queue_entries(db, actor.team_id, [*jobs, *extra])
    groups = group_cards([card(j, state, entries.get(j.id)) for j in jobs])
    new = group_cards([card(j, state, entries.get(j.id)) for j in extra])
    return templates.TemplateResponse(
        request,
        "jobs/_batch_answer.html",
        {"actor": actor, "groups": groups, "new_groups": new},
        headers=_CHANGED,
    )


@router.get("/batches/{batch_id}/group", response_class=HTMLResponse, summary="A batch's group")
def batch_group(request: Request, batch_id: str, actor: CurrentActor, db: SessionDep) -> Response:
    return _group(request, actor, db, _id(batch_id, "That batch"), [])


@router.post(
    "/batches/{batch_id}/queue/{move}", response_class=HTMLResponse, summary="Pause or move a batch"
)
def queue_batch(
    request: Request, batch_id: str, move: str, actor: ChangingActor, db: SessionDep
) -> Response:
    bid, chosen = _id(batch_id, "That batch"), _move(move)
    answer_refusals_with(request, _notice(request))
    move_batch(db, _caller(actor), bid, chosen)
    return _group(request, actor, db, bid, [])


@router.post("/batches/{batch_id}/cancel", response_class=HTMLResponse, summary="Cancel a batch")
def cancel_whole_batch(
    request: Request, batch_id: str, actor: ChangingActor, db: SessionDep
) -> Response:
    bid = _id(batch_id, "That batch")
    answer_refusals_with(request, _refused_group(request, bid))
    cancel_batch(db, _caller(actor), bid)
    return _group(request, actor, db, bid, [])


@router.post(
    "/batches/{batch_id}/retry", response_class=HTMLResponse, summary="Retry a batch's failures"
)
def retry_whole_batch(
    request: Request, batch_id: str, actor: ChangingActor, db: SessionDep
) -> Response:
    bid = _id(batch_id, "That batch")
    answer_refusals_with(request, _refused_group(request, bid))
    jobs = retry_batch(db, _caller(actor), bid)
    return _group(request, actor, db, bid, jobs)


def _refused_group(
    request: Request, batch_id: uuid.UUID
) -> Callable[[StudioError], Response | None]:
    """A refused batch cancel or retry: the group as it now is with the reason (role=alert);
    a missing batch is the 404 page."""

    def render(exc: StudioError) -> Response | None:
        actor = getattr(request.state, "actor_view", None)
        if actor is None or exc.status_code == 404:
            return error_page(request, 404, NotFound("That batch").message)
        with session_scope() as db:
            try:
                jobs = batch_jobs(db, team_id=actor.team_id, batch_id=batch_id)
            except StudioError:
                return error_page(request, 404, NotFound("That batch").message)
            groups = group_cards([card(j) for j in jobs])
            return templates.TemplateResponse(
                request,
                "jobs/_batch_answer.html",
                {"actor": actor, "groups": groups, "new_groups": [], "notice": exc.message},
            )

    return render
