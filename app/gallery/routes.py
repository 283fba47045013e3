"""Pages of the team gallery: the grid, its endless pages, the detail view and image files."""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm import Session

from app.auth.deps import ChangingActor, CurrentActor
from app.bfl.catalogue import list_models
from app.boards.service import BoardSummary, boards_of_job, list_boards
from app.deps import SessionDep
from app.errors import NotFound, StudioError, answer_refusals_with
from app.gallery import service
from app.jobs.queries import get_detail, image_file, team_job
from app.jobs.references import reference_file
from app.jobs.routes import card
from app.jobs.service import delete_job, toggle_favourite, vary_job
from app.projects.service import list_projects
from app.recipes.service import original_download
from app.storage import ObjectMissing, get_storage
from app.templating import error_page, templates
from app.units import credits_text

router = APIRouter(tags=["pages"])

#: A job's stored image never changes, so browsers may keep it; `private` keeps shared caches
#: (proxies, CDNs) from serving one team's image to another.
_IMAGE_CACHE = "private, max-age=31536000, immutable"


def _job_id(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise NotFound("That image") from None


def _filters(request: Request) -> tuple[service.GalleryFilters, dict[str, str]]:
    q = request.query_params
    problems: dict[str, str] = {}
    try:
        filters = service.parse_filters(
            model=q.get("model"),
            user=q.get("user"),
            status=q.get("status"),
            date_from=q.get("from"),
            date_to=q.get("to"),
            favourites=q.get("favourites"),
            q=q.get("q"),
            project=q.get("project"),
            board=q.get("board"),
        )
    except service.GalleryInputError as exc:
        problems[exc.field] = exc.message
        filters = service.GalleryFilters(q=(q.get("q") or None))
    return filters, problems


def _more_url(filters: service.GalleryFilters, cursor: str | None) -> str | None:
    if cursor is None:
        return None
    return "/gallery/more?" + urlencode({**service.filters_query(filters), "after": cursor})


@router.get("/gallery", response_class=HTMLResponse, summary="Team gallery")
def gallery(request: Request, actor: CurrentActor, db: SessionDep) -> Response:
    return gallery_page(request, actor, db)


def gallery_page(
    request: Request,
    actor: CurrentActor,
    db: SessionDep,
    *,
    board: BoardSummary | None = None,
) -> Response:
    """The gallery grid, or a board's page: the same grid, filters and search, limited to the
    board's images (`board`), so a board never lists images in a way of its own."""
    filters, problems = _filters(request)
    if board is not None:
        filters = replace(filters, board_id=board.id)
    page = service.list_gallery(db, team_id=actor.team_id, viewer_id=actor.user_id, filters=filters)
    boards = list_boards(db, team_id=actor.team_id)
    context: dict[str, Any] = {
        "board": board,
        "boards": boards,
        "page_url": f"/boards/{board.id}" if board is not None else "/gallery",
        "filters_query": service.filters_query(filters),
        "actor": actor,
        "filters": filters,
        "problems": problems,
        "raw": request.query_params,
        "page": page,
        "more_url": _more_url(filters, page.next_cursor),
        "models": list_models(),
        "people": service.team_people(db, actor.team_id),
        "projects": list_projects(db, team_id=actor.team_id),
        "statuses": [
            "ready",
            "queued",
            "submitting",
            "pending",
            "moderated",
            "failed",
            "cancelled",
        ],
    }
    return templates.TemplateResponse(request, "gallery/index.html", context)


@router.get("/gallery/more", response_class=HTMLResponse, summary="Next gallery tiles")
def gallery_more(request: Request, actor: CurrentActor, db: SessionDep) -> Response:
    filters, problems = _filters(request)
    if problems:
        return HTMLResponse("")
    try:
        page = service.list_gallery(
            db,
            team_id=actor.team_id,
            viewer_id=actor.user_id,
            filters=filters,
            after=request.query_params.get("after"),
        )
    except service.GalleryInputError as exc:
        return HTMLResponse(f'<p class="notice">{exc.message}</p>')
    return templates.TemplateResponse(
        request,
        "gallery/_tiles.html",
        {"page": page, "more_url": _more_url(filters, page.next_cursor)},
    )


@router.get("/gallery/{job_id}", response_class=HTMLResponse, summary="One image in detail")
def detail(request: Request, job_id: str, actor: CurrentActor, db: SessionDep) -> Response:
    found = get_detail(db, team_id=actor.team_id, job_id=_job_id(job_id), viewer_id=actor.user_id)
    can_delete = found.job.user_id == actor.user_id or actor.is_manager
    projects = list_projects(db, team_id=actor.team_id)
    project_name = next((p.name for p in projects if p.id == found.job.project_id), "")
    context = {
        "actor": actor,
        "d": found,
        "job": found.job,
        "can_delete": can_delete,
        "card": card(found.job),
        "cost": credits_text(found.job.cost_credits),
        "estimate": credits_text(found.job.estimated_credits),
        "search_url": "/gallery?" + urlencode({"q": found.job.prompt[:200]}),
        "boards": list_boards(db, team_id=actor.team_id),
        "on_boards": boards_of_job(db, team_id=actor.team_id, job_id=found.job.id),
        "projects": projects,
        "project_name": project_name,
    }
    return templates.TemplateResponse(request, "gallery/detail.html", context)


@router.post("/gallery/{job_id}/favourite", response_class=HTMLResponse, summary="Favourite")
def favourite(request: Request, job_id: str, actor: ChangingActor, db: SessionDep) -> Response:
    jid = _job_id(job_id)
    on = toggle_favourite(db, team_id=actor.team_id, user_id=actor.user_id, job_id=jid)
    return templates.TemplateResponse(
        request, "gallery/_favourite.html", {"job_id": jid, "favourite": on}
    )


@router.post("/gallery/{job_id}/vary", response_class=HTMLResponse, summary="Same, new seed")
def vary(request: Request, job_id: str, actor: ChangingActor, db: SessionDep) -> Response:
    job = team_job(db, team_id=actor.team_id, job_id=_job_id(job_id))
    answer_refusals_with(request, lambda exc: _refused_vary(request, exc))
    jobs = vary_job(db, job, team_id=actor.team_id, user_id=actor.user_id)
    return templates.TemplateResponse(
        request, "jobs/_cards.html", {"actor": actor, "cards": [card(j) for j in jobs]}
    )


def _refused_vary(request: Request, exc: StudioError) -> Response | None:
    """A refused variation: the reason as a notice where the new card would go (the 404 and
    403 pages for a missing job and a refusal by role, as the API answers)."""
    if exc.status_code == 404:
        return error_page(request, 404, NotFound("That image").message)
    if exc.status_code not in (402, 409, 422):
        return None
    return templates.TemplateResponse(
        request, "partials/notice.html", {"message": exc.message, "kind": "error"}
    )


@router.post("/gallery/{job_id}/delete", summary="Hide an image from the gallery")
def delete(request: Request, job_id: str, actor: ChangingActor, db: SessionDep) -> Response:
    delete_job(
        db,
        team_id=actor.team_id,
        job_id=_job_id(job_id),
        user_id=actor.user_id,
        is_manager=actor.is_manager,
    )
    if request.headers.get("hx-request"):
        return Response(status_code=204, headers={"HX-Redirect": "/gallery"})
    return RedirectResponse("/gallery", status_code=303)


def _serve(
    request: Request, actor: CurrentActor, db: SessionDep, job_id: str, variant: str
) -> Response:
    found = image_file(db, team_id=actor.team_id, job_id=_job_id(job_id), variant=variant)
    etag = f'"{job_id}-{variant}-r1"'
    headers = {"Cache-Control": _IMAGE_CACHE, "ETag": etag}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    try:
        if variant == "original":
            # Every download of an original carries its recipe (app/recipes).
            data = original_download(db, team_id=actor.team_id, job_id=_job_id(job_id)).data
        else:
            data = get_storage().get(found.key)
    except ObjectMissing:
        raise NotFound("That image file") from None
    disposition = "attachment" if request.query_params.get("download") else "inline"
    headers["Content-Disposition"] = (
        f"{disposition}; filename=\"{found.filename}\"; filename*=UTF-8''{quote(found.filename)}"
    )
    headers["X-Content-Type-Options"] = "nosniff"
    return Response(content=data, media_type=found.content_type, headers=headers)


@router.get("/images/{job_id}/original", summary="The stored original image")
def original(request: Request, job_id: str, actor: CurrentActor, db: SessionDep) -> Response:
    return _serve(request, actor, db, job_id, "original")


@router.get("/images/{job_id}/thumb", summary="The stored thumbnail")
def thumb(request: Request, job_id: str, actor: CurrentActor, db: SessionDep) -> Response:
    return _serve(request, actor, db, job_id, "thumb")


@router.get("/references/{sha256}", summary="A stored reference image")
def reference_original(sha256: str, actor: CurrentActor, db: SessionDep) -> Response:
    return _serve_reference(db, actor.team_id, sha256, "original")


@router.get("/references/{sha256}/thumb", summary="A stored reference image's thumbnail")
def reference_thumb(sha256: str, actor: CurrentActor, db: SessionDep) -> Response:
    return _serve_reference(db, actor.team_id, sha256, "thumb")


def _serve_reference(db: Session, team_id: uuid.UUID, sha256: str, variant: str) -> Response:
    found = reference_file(db, team_id, sha256, variant)
    headers = {
        "Cache-Control": _IMAGE_CACHE,
        "X-Content-Type-Options": "nosniff",
        "Content-Disposition": f'inline; filename="{found.filename}"',
    }
    return Response(content=found.data, media_type=found.content_type, headers=headers)
