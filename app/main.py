"""The FastAPI application: pages, the JSON API, health probes and static files."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from app.ops import health
from app.templating import STATIC_DIR


def create_app() -> FastAPI:
    app = FastAPI(
        title="FLUX Team Studio",
        version="0.1.0",
        description="Generate images with FLUX.2 as a team: shared gallery, prompts and costs.",
    )
    app.mount("/static", StaticFiles(directory=str(STATIC_DIR)), name="static")
    app.include_router(health.router)
    return app


app = create_app()
