"""The FastAPI application: pages, the JSON API, health probes and static files."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

from anyio import to_thread
from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from sqlalchemy.orm import configure_mappers
from starlette.exceptions import HTTPException

from app.access import routes as access_routes
from app.alerts import routes as alerts_routes
from app.api import router as api_router
from app.api.openapi import install_openapi
from app.audit import routes as audit_routes
from app.auth import api_tokens_page
from app.auth import routes as auth_routes
from app.boards import routes as boards_routes
from app.bulk import routes as bulk_routes
from app.costs import routes as costs_routes
from app.error_handlers import install_error_handlers
from app.gallery import routes as gallery_routes
from app.headers import SecurityHeadersMiddleware, install_docs
from app.jobs import queue_routes
from app.jobs import routes as jobs_routes
from app.jobs import webhooks as job_webhooks
from app.limits import RequestSizeLimit, form_limits
from app.ops import health
from app.ops import routes as ops_routes
from app.ops.middleware import install_observability
from app.ops.proxies import TrustedProxyMiddleware
from app.ops.warm_up import connect_ahead
from app.projects import routes as projects_routes
from app.prompts import routes as prompts_routes
from app.recipes import routes as recipes_routes
from app.templating import STATIC_DIR


def warm_up() -> None:
    """Pay a web process's one-time costs before its first requests: the ORM's mapper set-up,
    a connection to PostgreSQL and one to the broker. Otherwise the first requests after a
    start (a burst of BFL's webhook calls, say) all pay them at once, each waiting hundreds of
    milliseconds. A service that is down is only logged: the requests then connect as usual.
    """
    configure_mappers()
    connect_ahead("request")


async def _route_once(app: FastAPI) -> None:
    """Send one request for a path no route has straight to the router (past the middleware,
    so nothing is logged or counted): FastAPI prepares each route on the first request that
    looks at it, and a path that matches nothing looks at them all (~0.2 s of CPU)."""
    path = "/.warm-up"
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [],
        "server": ("warm-up", 80),
        "client": None,
        "app": app,
    }

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(_message: object) -> None:
        return None

    # The 404 comes as an exception, for the middleware that is skipped here.
    with suppress(HTTPException):
        await app.router(scope, receive, send)


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    await to_thread.run_sync(warm_up)
    await _route_once(app)
    yield


def create_app() -> FastAPI:
    app = FastAPI(
        lifespan=_lifespan,
        # /docs is served by app.headers.install_docs from the studio's own files, not a CDN.
        docs_url=None,
        redoc_url=None,
        title="FLUX Team Studio",
        version="0.1.0",
        description="Generate images with FLUX.2 as a team: shared gallery, prompts and costs.",
        # Forms FastAPI parses for routes (sign-in, account, team): no files, few small fields.
        form_limits=form_limits(),  # type: ignore[arg-type]
    )
    install_error_handlers(app)
    # Outside the NUL check (which reads form bodies) so no body is read past its limit, and
    # inside the observability middleware added below, so refusals are logged and counted.
    app.add_middleware(RequestSizeLimit)
    install_openapi(app)
    install_observability(app)
    app.add_middleware(SecurityHeadersMiddleware)
    install_docs(app)
    # Added last, so it runs first: every later layer sees the resolved client address.
    app.add_middleware(TrustedProxyMiddleware)
    app.mount("/static", StaticFiles(directory=str(STATIC_DIR)), name="static")
    app.include_router(health.router)
    app.include_router(api_router.router)
    app.include_router(auth_routes.router)
    app.include_router(api_tokens_page.router)
    app.include_router(jobs_routes.router)
    app.include_router(queue_routes.router)
    app.include_router(bulk_routes.router)
    app.include_router(gallery_routes.router)
    app.include_router(boards_routes.router)
    app.include_router(prompts_routes.router)
    app.include_router(recipes_routes.router)
    app.include_router(costs_routes.router)
    app.include_router(audit_routes.router)
    app.include_router(alerts_routes.router)
    app.include_router(access_routes.router)
    app.include_router(projects_routes.router)
    app.include_router(ops_routes.router)
    app.include_router(job_webhooks.router)
    return app


app = create_app()
