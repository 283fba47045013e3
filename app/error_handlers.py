"""The handlers and middleware that answer every failure with the studio's error shape.

API callers get the JSON shape of app/errors.py, people get the error page
(app/templating.py). Kept apart from the error family, which services raise and which must
not reach the templates.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import parse_qsl, quote, unquote_to_bytes

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.db import database_unavailable
from app.errors import (
    CODE_BY_STATUS,
    DATABASE_RETRY_AFTER_S,
    DATABASE_UNAVAILABLE_MESSAGE,
    FieldProblem,
    NotAuthenticated,
    RefusalPage,
    StudioError,
    error_json,
    wants_json,
)
from app.limits import form_limit_problem
from app.templating import error_page

log = logging.getLogger(__name__)


# --- NUL characters -----------------------------------------------------------------------

#: Form bodies up to this size are checked for NUL; larger ones are left to the routes.
_CHECKED_FORM_BYTES = 2 * 1024 * 1024
_NUL_MESSAGE = "must not contain NUL characters"


def _nul_fields(encoded: bytes) -> list[str]:
    """Names of the fields of a query string or urlencoded form that hold a NUL character."""
    if b"\x00" not in encoded and b"%00" not in encoded:
        return []
    # latin-1 maps every byte to one character, so decoding can neither fail nor hide a NUL.
    pairs = parse_qsl(encoded.decode("latin-1"), keep_blank_values=True, encoding="latin-1")
    fields = [
        name.replace("\x00", "") or "request"
        for name, value in pairs
        if "\x00" in name or "\x00" in value
    ]
    if not fields and b"\x00" in unquote_to_bytes(encoded):
        fields.append("request")
    return list(dict.fromkeys(fields))


class RefuseNulCharacters:
    """Answers 422 to a request whose path, query string or urlencoded form holds a NUL.

    PostgreSQL text cannot store NUL, so such a value would end as a database error deep in
    whichever service first used it. Checking once here keeps every route, present and
    future, from answering 500. Multipart bodies (which carry binary files) and JSON are left
    to the routes' own validation.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        fields = ["path"] if "\x00" in scope.get("path", "") else []
        fields += _nul_fields(scope.get("query_string", b""))
        if fields:
            await self._refuse(scope, receive, send, fields)
            return
        content_type = ""
        for key, value in scope.get("headers", ()):
            if key == b"content-type":
                content_type = value.decode("latin-1").split(";")[0].strip().lower()
        if content_type != "application/x-www-form-urlencoded":
            await self.app(scope, receive, send)
            return
        received: list[Message] = []
        body = b""
        more = True
        while more and len(body) <= _CHECKED_FORM_BYTES:
            message = await receive()
            received.append(message)
            if message["type"] != "http.request":
                break
            body += message.get("body", b"")
            more = message.get("more_body", False)
        if not more:
            fields = _nul_fields(body)
            if fields:
                await self._refuse(scope, receive, send, fields)
                return

        async def replay() -> Message:
            # The body was read here; hand the same messages to the app, then carry on.
            if received:
                return received.pop(0)
            return await receive()

        await self.app(scope, replay, send)

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send, fields: list[str]) -> None:
        request = Request(scope)
        named = ", ".join(fields)
        message = f"{named}: remove the NUL character (%00); text here cannot contain it."
        response: Response
        if wants_json(request):
            problems = [FieldProblem(field=f, message=_NUL_MESSAGE) for f in fields]
            response = error_json(422, "invalid_request", message, problems)
        else:
            response = error_page(request, 422, message)
        await response(scope, receive, send)


def database_unavailable_response(request: Request, error: BaseException) -> Response:
    """503 in the studio's shape (JSON for the API, the error page otherwise) with Retry-After,
    logged once as an error; the caller's request id is bound by the observability middleware.
    """
    log.error(
        "database unavailable on %s %s: %s: %s",
        request.method,
        request.url.path,
        type(error).__name__,
        " ".join(str(getattr(error, "orig", None) or error).split())[:300],
    )
    headers = {"Retry-After": str(DATABASE_RETRY_AFTER_S)}
    if wants_json(request):
        return error_json(
            503, "database_unavailable", DATABASE_UNAVAILABLE_MESSAGE, headers=headers
        )
    return error_page(request, 503, DATABASE_UNAVAILABLE_MESSAGE, headers=headers)


class DatabaseUnavailable:
    """Answers 503 when a request fails because PostgreSQL cannot be reached.

    Without it such an error travels out of every middleware to Starlette's last-resort
    handler: a 500 without the request's `X-Request-ID`, logged without its request id, and
    logged a second time by the server. Answered here, inside the observability middleware,
    the response carries the id and the one log line does too. Other errors pass on untouched.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            # Once the response has begun, no other answer can be sent in its place.
            if started or not database_unavailable(exc):
                raise
            response = database_unavailable_response(Request(scope), exc)
            await response(scope, receive, send)


def _location(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header", "form")]
    return ".".join(parts) or "request"


#: FastAPI's detail when a request body cannot be decoded at all.
_BODY_PARSE_FAILED = "There was an error parsing the body"


async def studio_error(request: Request, exc: StudioError) -> Response:
    """The one mapping of the studio's errors to HTTP, for the API and the pages."""
    if isinstance(exc, NotAuthenticated) and not wants_json(request):
        target = "/login"
        if request.method == "GET":
            target += "?next=" + quote(request.url.path, safe="/")
        if request.headers.get("hx-request"):
            return Response(status_code=204, headers={"HX-Redirect": target})
        return RedirectResponse(target, status_code=303)
    redirect_to = getattr(exc, "redirect_to", None)
    if isinstance(redirect_to, str) and not wants_json(request):
        # A browser that must do something first (set up a second factor) is sent there.
        if request.headers.get("hx-request"):
            return Response(status_code=204, headers={"HX-Redirect": redirect_to})
        return RedirectResponse(redirect_to, status_code=303)
    if wants_json(request):
        return error_json(exc.status_code, exc.code, exc.message, exc.fields, exc.headers)
    render: RefusalPage | None = getattr(request.state, "refusal_page", None)
    if render is not None:
        answer = render(exc)
        if answer is not None:
            return answer
    return error_page(request, exc.status_code, exc.message, headers=exc.headers)


async def validation_error(request: Request, exc: RequestValidationError) -> Response:
    """FastAPI's own request validation, in the studio's error shape (422, field paths)."""
    fields = [
        FieldProblem(field=_location(err.get("loc", ())), message=str(err.get("msg", "")))
        for err in exc.errors()
    ]
    summary = "; ".join(f"{f.field}: {f.message}" for f in fields[:5])
    return error_json(422, "invalid_request", f"Check these fields: {summary}", fields)


async def unexpected_error(request: Request, exc: Exception) -> Response:
    """The last line of defence: a bug still answers in the shared shape, and is logged with
    its traceback so it gets fixed rather than hidden."""
    if database_unavailable(exc):
        return database_unavailable_response(request, exc)
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_json(
        500,
        "internal_error",
        "Something went wrong on our side and it has been logged; try again in a moment.",
    )


async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
    """Starlette's HTTP errors (404 routes, 405, body limits) in the studio's shape."""
    code = CODE_BY_STATUS.get(exc.status_code, "error")
    message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
    headers = dict(exc.headers or {})
    if exc.status_code == 400:
        problem = form_limit_problem(request, message)
        if problem is not None:
            return await studio_error(request, problem)
    if exc.status_code == 400 and message == _BODY_PARSE_FAILED:
        # A body that is not valid JSON (or not text at all) is an invalid request like any
        # other: one status, one documented shape, naming the body as the field at fault.
        fields = [FieldProblem(field="body", message="send a valid JSON (UTF-8) body")]
        return error_json(422, "invalid_request", "The request body is not valid JSON.", fields)
    if wants_json(request):
        return error_json(exc.status_code, code, message, headers=headers)
    return error_page(request, exc.status_code, message, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Register the middlewares and handlers above on `app`."""
    # Innermost middleware (added first): requests it refuses still pass through the
    # observability middleware added later, so they are logged and counted.
    app.add_middleware(RefuseNulCharacters)
    # Outside the NUL check, inside the observability middleware (added later, so outer).
    app.add_middleware(DatabaseUnavailable)
    app.exception_handler(StudioError)(studio_error)
    app.exception_handler(RequestValidationError)(validation_error)
    app.exception_handler(Exception)(unexpected_error)
    app.exception_handler(StarletteHTTPException)(http_error)
