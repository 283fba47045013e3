"""Web request context: an X-Request-ID in and out, one log line and one timing per request."""

from __future__ import annotations

import re
import time
import uuid

import structlog
from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.ops import metrics
from app.ops.logs import (
    REDACTED,
    SECRET_PATH_PARAMS,
    configure_logging,
    get_logger,
    redact_url_text,
)

REQUEST_ID_HEADER = "x-request-id"
#: A caller's id is kept only when it is short and plain, so it cannot forge log structure.
_ACCEPTED_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
#: Probes and scrapes would drown the log; they are still timed.
_QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})

log = get_logger("app.requests")


def request_id_from(scope: Scope) -> str:
    for name, value in scope.get("headers", []):
        if name == REQUEST_ID_HEADER.encode():
            candidate: str = value.decode("latin-1").strip()
            if _ACCEPTED_ID.fullmatch(candidate):
                return candidate
            break
    return uuid.uuid4().hex


def route_label(scope: Scope) -> str:
    """The matched route's template with any router prefix (`/api/v1/jobs/{job_id}`).

    Templates keep the metric's label values few; nested routers report their own path only,
    so the prefix is recovered from the requested path.
    """
    template = getattr(scope.get("route"), "path", None)
    if not isinstance(template, str) or not template:
        return "unmatched"
    path = scope.get("path", "")
    static = template.split("{", 1)[0]
    at = path.find(static) if static else -1
    return (path[:at] + template) if at > 0 else template


def loggable_path(scope: Scope) -> str:
    """The requested path with every credential-carrying path parameter (an invite link's
    token, a webhook URL's token) replaced by `[redacted]`, then the shape-based redaction."""
    path = str(scope.get("path", ""))
    params = scope.get("path_params") or {}
    for name, value in params.items():
        if name in SECRET_PATH_PARAMS and isinstance(value, str) and value:
            path = path.replace(value, REDACTED)
    return redact_url_text(path)


class RequestContextMiddleware:
    """Binds `request_id` for every log line of a request and echoes it in the response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_from(scope)
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = [
                    (k, v)
                    for k, v in message.get("headers", [])
                    if k.lower() != REQUEST_ID_HEADER.encode()
                ]
                headers.append((REQUEST_ID_HEADER.encode(), request_id.encode()))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = route_label(scope)
            method = scope.get("method", "GET")
            metrics.observe_http_request(method, route, status, elapsed)
            path = scope.get("path", "")
            if path not in _QUIET_PATHS and not path.startswith("/static/"):
                query = scope.get("query_string", b"").decode("latin-1")
                log.info(
                    "request",
                    method=method,
                    path=loggable_path(scope),
                    **({"query": redact_url_text("?" + query)[1:]} if query else {}),
                    route=route,
                    status=status,
                    duration_ms=round(elapsed * 1000, 1),
                )
            structlog.contextvars.clear_contextvars()


def install_observability(app: FastAPI) -> None:
    """Structured logs for the web process and request ids on every request."""
    configure_logging("web")
    app.add_middleware(RequestContextMiddleware)
