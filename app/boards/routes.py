"""Pages of boards: the list, a board (the gallery's grid limited to it) and its changes."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from app.auth.deps import Actor, ActorView, ChangingActor, CurrentActor
from app.boards import service
from app.db import session_scope
from app.deps import SessionDep
from app.errors import FieldError, NotFound, RequestInvalid, StudioError, answer_refusals_with
from app.gallery.routes import gallery_page
from app.limits import read_form
from app.templating import templates

router = APIRouter(tags=["pages"])


def board_id_or_404(raw: str, what: str = "That board") -> uuid.UUID:
    """An id from a path or form value; NotFound (naming `what`) for anything that is not one."""
    try:
        return uuid.UUID(raw.strip())
    except ValueError:
        raise NotFound(what) from None


def editor_of(actor: Actor) -> service.Editor:
    """The caller as a board editor (id, email for the audit log, manager or not)."""
    return service.Editor(
        user_id=actor.user_id, email=actor.user.email, is_manager=actor.is_manager
    )


async def _field(request: Request, name: str) -> str:
    value = (await read_form(request)).get(name)
    return value if isinstance(value, str) else ""


def _list_page(
    request: Request, actor: Actor | ActorView, error: str | None = None, typed: str = ""
) -> Response:
    with session_scope() as db:
        boards = service.list_boards(db, team_id=actor.team_id)
    return templates.TemplateResponse(
        request,
        "boards/index.html",
        {"actor": actor, "boards": boards, "error": error, "typed": typed},
        status_code=422 if error else 200,
    )


def _notice(request: Request, exc: StudioError) -> Response | None:
    """A refusal answered in place (htmx) with its reason, for the bulk bar's buttons."""
    if not request.headers.get("hx-request") or exc.status_code not in (403, 404, 422):
        return None
    message = exc.fields[0].message if exc.fields else exc.message
    return templates.TemplateResponse(
        request,
        "partials/notice.html",
        {"message": f"Nothing changed: {message}.", "kind": "error"},
    )


@router.get("/boards", response_class=HTMLResponse, summary="The team's boards")
def boards(request: Request, actor: CurrentActor) -> Response:
    return _list_page(request, actor.view())


@router.post("/boards", summary="Create a board")
async def create(request: Request, actor: ChangingActor, db: SessionDep) -> Response:
    name = await _field(request, "name")
    view = actor.view()

    def refused(exc: StudioError) -> Response | None:
        if exc.status_code != 422:
            return None
        message = exc.fields[0].message if exc.fields else exc.message
        return _list_page(request, view, message, name)

    answer_refusals_with(request, refused)
    board = service.create_board(db, team_id=actor.team_id, user_id=actor.user_id, name=name)
    return RedirectResponse(f"/boards/{board.id}", status_code=303)


@router.get("/boards/{board_id}", response_class=HTMLResponse, summary="One board")
def board_page(request: Request, board_id: str, actor: CurrentActor, db: SessionDep) -> Response:
    board = service.get_board(db, team_id=actor.team_id, board_id=board_id_or_404(board_id))
    return gallery_page(request, actor, db, board=board)


@router.post("/boards/{board_id}/rename", summary="Rename a board")
async def rename(request: Request, board_id: str, actor: ChangingActor, db: SessionDep) -> Response:
    bid = board_id_or_404(board_id)
    service.rename_board(
        db,
        team_id=actor.team_id,
        board_id=bid,
        editor=editor_of(actor),
        name=await _field(request, "name"),
    )
    return RedirectResponse(f"/boards/{bid}", status_code=303)


@router.post("/boards/{board_id}/cover", summary="Choose a board's cover")
async def cover(request: Request, board_id: str, actor: ChangingActor, db: SessionDep) -> Response:
    answer_refusals_with(request, lambda exc: _notice(request, exc))
    bid = board_id_or_404(board_id)
    # One image: `job_id` from the board's own form, or the one tile picked in the bulk bar.
    raw = (await _field(request, "job_id")).strip()
    picked = [p for p in (await _field(request, "job_ids")).split(",") if p.strip()]
    if not raw and len(picked) > 1:
        raise RequestInvalid([FieldError("job_id", "pick one image to be the cover")])
    raw = raw or (picked[0] if picked else "")
    job_id = board_id_or_404(raw, "That image") if raw else None
    service.set_cover(
        db, team_id=actor.team_id, board_id=bid, editor=editor_of(actor), job_id=job_id
    )
    if request.headers.get("hx-request"):
        return templates.TemplateResponse(
            request, "partials/notice.html", {"message": "Cover chosen.", "kind": "info"}
        )
    return RedirectResponse(f"/boards/{bid}", status_code=303)


@router.post("/boards/{board_id}/delete", summary="Delete a board (its images stay)")
def delete(request: Request, board_id: str, actor: ChangingActor, db: SessionDep) -> Response:
    service.delete_board(
        db, team_id=actor.team_id, board_id=board_id_or_404(board_id), editor=editor_of(actor)
    )
    if request.headers.get("hx-request"):
        return Response(status_code=204, headers={"HX-Redirect": "/boards"})
    return RedirectResponse("/boards", status_code=303)
