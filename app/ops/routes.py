"""Operations pages: /metrics for Prometheus and the live /ops page for admins."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from app.auth.deps import AdminActor
from app.deps import SessionDep
from app.ops import metrics
from app.ops.figures import StudioCollector
from app.ops.service import ops_snapshot
from app.templating import templates

router = APIRouter(tags=["ops"])

#: How often the ops page refreshes its figures.
LIVE_EVERY_S = 3


@router.get(
    "/metrics",
    summary="Prometheus metrics (bearer METRICS_TOKEN, or loopback when unset)",
    response_class=Response,
    responses={401: {"description": "Token missing or wrong"}, 403: {"description": "Not local"}},
)
def prometheus_metrics(request: Request) -> Response:
    refusal = metrics.scrape_refusal(
        request.headers.get("authorization", ""), request.client.host if request.client else None
    )
    if refusal is not None:
        status, message = refusal
        headers = {"WWW-Authenticate": 'Bearer realm="metrics"'} if status == 401 else None
        return Response(message, status_code=status, media_type="text/plain", headers=headers)
    return Response(
        metrics.render_metrics(StudioCollector()), media_type=metrics.CONTENT_TYPE_LATEST
    )


@router.get("/ops", response_class=HTMLResponse, summary="Live operations page (admins)")
def ops_page(request: Request, actor: AdminActor, db: SessionDep) -> HTMLResponse:
    snapshot = ops_snapshot(db, actor.team_id)
    return templates.TemplateResponse(
        request,
        "ops/index.html",
        {"actor": actor, "ops": snapshot, "live_every_s": LIVE_EVERY_S},
    )


@router.get("/ops/live", response_class=HTMLResponse, summary="The ops page's live figures")
def ops_live(request: Request, actor: AdminActor, db: SessionDep) -> HTMLResponse:
    snapshot = ops_snapshot(db, actor.team_id)
    return templates.TemplateResponse(
        request,
        "ops/_live.html",
        {"actor": actor, "ops": snapshot, "live_every_s": LIVE_EVERY_S},
    )
