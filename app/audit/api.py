"""The audit log as JSON under /api/v1: filtered keyset pages and streamed exports (managers)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from app.audit.export import audit_download
from app.audit.params import AfterQuery, FiltersDep
from app.audit.queries import audit_page
from app.audit.schemas import AuditPage
from app.auth.deps import ManagerActor
from app.db import utcnow
from app.deps import SessionDep
from app.errors import error_responses

router = APIRouter(tags=["audit"])


@router.get("/audit", response_model=AuditPage, responses=error_responses(401, 403, 404, 422))
def list_audit(
    actor: ManagerActor, db: SessionDep, filters: FiltersDep, after: AfterQuery = None
) -> AuditPage:
    """The team's audit entries, newest first, 50 a page (managers and admins).

    Filters: `person` (user id), `action`, `start`/`end` (UTC days, included), `target_type`,
    `target_id`. Entries cannot be changed or deleted: there is no such route.
    """
    return audit_page(db, team_id=actor.team_id, filters=filters, after=after)


_EXPORT: dict[int | str, dict[str, Any]] = {
    **error_responses(401, 403, 404, 422),
    200: {
        "description": "Every matching entry, newest first, streamed",
        "content": {
            "text/csv": {"schema": {"type": "string"}},
            "application/json": {
                "schema": {"type": "array", "items": {"$ref": "#/components/schemas/AuditEntryOut"}}
            },
        },
    },
}


@router.get("/audit/export.csv", response_class=StreamingResponse, responses=_EXPORT)
def export_audit_csv(actor: ManagerActor, filters: FiltersDep) -> StreamingResponse:
    """The team's matching entries as a CSV download (same filters as GET /audit)."""
    return audit_download(actor.team_id, filters, "csv", utcnow().date())


@router.get("/audit/export.json", response_class=StreamingResponse, responses=_EXPORT)
def export_audit_json(actor: ManagerActor, filters: FiltersDep) -> StreamingResponse:
    """The team's matching entries as a JSON array download (same filters as GET /audit)."""
    return audit_download(actor.team_id, filters, "json", utcnow().date())
