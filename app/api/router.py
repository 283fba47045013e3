"""The JSON API under /api/v1: one router gathering every feature's api.py."""

from __future__ import annotations

from fastapi import APIRouter

from app.auth import api as auth_api
from app.costs import api as costs_api
from app.gallery import api as gallery_api
from app.jobs import api as jobs_api

router = APIRouter(prefix="/api/v1")
router.include_router(auth_api.router)
router.include_router(jobs_api.router)
router.include_router(gallery_api.router)
router.include_router(costs_api.router)
