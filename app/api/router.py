"""The JSON API under /api/v1: one router gathering every feature's api.py."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from app.access import api as access_api
from app.alerts import api as alerts_api
from app.api.ratelimit import enforce_rate_limit
from app.audit import api as audit_api
from app.auth import api as auth_api
from app.boards import api as boards_api
from app.bulk import api as bulk_api
from app.costs import api as costs_api
from app.errors import error_responses
from app.gallery import api as gallery_api
from app.jobs import api as jobs_api
from app.jobs import queue_api
from app.projects import api as projects_api

# Every API route needs a caller, counts against its token's rate limit, and (as a last line
# of defence) answers unexpected failures in the shared error shape.
router = APIRouter(
    prefix="/api/v1",
    dependencies=[Depends(enforce_rate_limit)],
    responses=error_responses(401, 429, 500),
)
router.include_router(auth_api.router)
router.include_router(jobs_api.router)
router.include_router(jobs_api.images_router)
router.include_router(queue_api.router)
router.include_router(gallery_api.router)
router.include_router(boards_api.router)
router.include_router(bulk_api.router)
router.include_router(costs_api.router)
router.include_router(audit_api.router)
router.include_router(alerts_api.router)
router.include_router(access_api.router)
router.include_router(projects_api.router)
