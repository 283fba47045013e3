"""The audit page (/audit) for managers and admins: filters, keyset pages, CSV and JSON export."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse

from app.audit.export import audit_download
from app.audit.params import AfterQuery, FiltersDep, filters_query
from app.audit.queries import audit_page, known_actions, known_targets
from app.auth.deps import ManagerActor
from app.auth.service import team_members
from app.db import utcnow
from app.deps import SessionDep
from app.templating import templates

router = APIRouter(tags=["audit pages"])


@router.get("/audit", response_class=HTMLResponse)
def audit_index(
    request: Request,
    actor: ManagerActor,
    db: SessionDep,
    filters: FiltersDep,
    after: AfterQuery = None,
) -> Response:
    """The team's audit log, newest first, with its filters and a link to the next page."""
    page = audit_page(db, team_id=actor.team_id, filters=filters, after=after)
    query = filters_query(filters)
    context = {
        "actor": actor,
        "page": page,
        "filters": filters,
        "query": query,
        "people": team_members(db, actor.team_id),
        "actions": known_actions(db, actor.team_id),
        "targets": known_targets(db, actor.team_id),
    }
    return templates.TemplateResponse(request, "audit/index.html", context)


@router.get("/audit/export.csv")
def audit_export_csv(actor: ManagerActor, filters: FiltersDep) -> StreamingResponse:
    """The filtered log as a CSV download."""
    return audit_download(actor.team_id, filters, "csv", utcnow().date())


@router.get("/audit/export.json")
def audit_export_json(actor: ManagerActor, filters: FiltersDep) -> StreamingResponse:
    """The filtered log as a JSON download."""
    return audit_download(actor.team_id, filters, "json", utcnow().date())
