"""Pages: act on many gallery or board images at once, and download them as one ZIP."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from starlette.datastructures import FormData

from app.auth.deps import Actor, ChangingActor
from app.boards.routes import board_id_or_404
from app.bulk import archive, service
from app.deps import SessionDep
from app.errors import StudioError, answer_refusals_with
from app.jobs.moves import ProjectNotFound
from app.limits import read_form
from app.templating import templates

router = APIRouter(tags=["pages"])

_FILTER_FIELDS = ("model", "user", "status", "from", "to", "favourites", "q", "board")


def _text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def _selected(form: FormData, actor: Actor, db: SessionDep) -> list[uuid.UUID]:
    selection = service.selection_from(
        {name: _text(form, name) for name in _FILTER_FIELDS},
        all_matching=_text(form, "all_matching") in ("1", "on", "true"),
        job_ids=service.parse_ids([_text(form, "job_ids")]),
    )
    return service.resolve(db, team_id=actor.team_id, viewer_id=actor.user_id, selection=selection)


def _project_id(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise ProjectNotFound() from None


def _notice(request: Request, exc: StudioError) -> Response | None:
    if exc.status_code not in (403, 404, 422):
        return None
    message = exc.fields[0].message if exc.fields else exc.message
    return templates.TemplateResponse(
        request,
        "partials/notice.html",
        {"message": f"Nothing changed: {message}.", "kind": "error"},
    )


@router.post("/gallery/bulk", response_class=HTMLResponse, summary="Act on selected images")
async def bulk(request: Request, actor: ChangingActor, db: SessionDep) -> Response:
    answer_refusals_with(request, lambda exc: _notice(request, exc))
    form = await read_form(request)
    action = _text(form, "action")
    target = _text(form, "board_id")
    project = _text(form, "project_id")
    job_ids = _selected(form, actor, db)
    result = service.run(
        db,
        action=action,
        team_id=actor.team_id,
        user_id=actor.user_id,
        is_manager=actor.is_manager,
        job_ids=job_ids,
        board_id=board_id_or_404(target) if target else None,
        project_id=_project_id(project) if project else None,
    )
    refused = {r.job_id for r in result.refused}
    gone = [j for j in job_ids if j not in refused] if action in ("delete", "unboard") else []
    if action == "unboard" and _text(form, "board") != target:
        gone = []  # only the board's own page shows tiles that leave with it
    html = templates.get_template("partials/notice.html").render(
        message=service.summary(action, result), kind="error" if refused else "info"
    )
    html += "".join(f'<figure id="tile-{j}" hx-swap-oob="delete"></figure>' for j in gone)
    return HTMLResponse(html)


@router.post("/gallery/bulk/zip", summary="Download selected images as one ZIP")
async def bulk_zip(request: Request, actor: ChangingActor, db: SessionDep) -> Response:
    form = await read_form(request)
    job_ids = _selected(form, actor, db)
    plan = archive.plan_archive(db, team_id=actor.team_id, job_ids=job_ids)
    return archive.zip_response(plan)
