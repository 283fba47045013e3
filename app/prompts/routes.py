"""The prompt-history page: the team's prompts, searchable, with a "mine" view and reuse links."""

from __future__ import annotations

import uuid
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from app.auth.deps import CurrentActor
from app.deps import SessionDep
from app.projects.service import list_projects
from app.prompts.service import prompt_history
from app.templating import templates
from app.units import credits_text

router = APIRouter(tags=["pages"])


#: Largest offset passed to SQL: past every real history, and inside PostgreSQL's bigint.
_MAX_OFFSET = 2**31 - 1


def _offset(raw: str | None) -> int:
    try:
        return min(max(0, int(raw or 0)), _MAX_OFFSET)
    except ValueError:
        return 0


def _project(raw: str | None) -> uuid.UUID | None:
    """The `project` filter; a malformed id filters nothing rather than failing the page."""
    try:
        return uuid.UUID(raw.strip()) if raw and raw.strip() else None
    except ValueError:
        return None


@router.get("/prompts", response_class=HTMLResponse, summary="Shared prompt history")
def prompts(request: Request, actor: CurrentActor, db: SessionDep) -> Response:
    query = request.query_params
    q = (query.get("q") or "").strip()
    mine = query.get("view") == "mine"
    offset = _offset(query.get("offset"))
    project = _project(query.get("project"))
    page = prompt_history(
        db,
        actor.team_id,
        q=q or None,
        user_id=actor.user_id if mine else None,
        offset=offset,
        project_id=project,
    )
    more_url = None
    if page.next_offset is not None:
        params = {"q": q, "view": "mine" if mine else "team", "offset": str(page.next_offset)}
        if project is not None:
            params["project"] = str(project)
        more_url = "/prompts?" + urlencode(params)
    context = {
        "actor": actor,
        "q": q,
        "mine": mine,
        "page": page,
        "project": project,
        "projects": list_projects(db, team_id=actor.team_id),
        "more_url": more_url,
        "credits_text": credits_text,
        # "Use" fills the generate form with every setting of the prompt's latest job (and
        # its batch size), not just the prompt and model.
        "reuse_url": lambda item: "/?" + urlencode({"from": str(item.last_job_id)}),
    }
    # Later pages arrive by htmx as rows only, appended where the "load more" marker was.
    template = (
        "prompts/_rows.html"
        if offset and request.headers.get("hx-request")
        else "prompts/index.html"
    )
    return templates.TemplateResponse(request, template, context)
