"""The studio's error family, its one mapping to HTTP, and the handlers that answer with it.

Every refusal the studio makes is a `StudioError`: our own request validation
(`RequestInvalid`), a refused job operation (`app.jobs.service.JobError`), a crossed budget
(`app.costs.service.BudgetExceeded`), and the plumbing errors below. Each carries its HTTP
status, a stable code, a message for people and the request fields at fault; the handlers in
`install_error_handlers` turn them into the JSON shape (API) or a page. BFL's own answers are
another family (`app.bfl.errors`), handled by the pipeline, never sent to a caller as such.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote, unquote_to_bytes

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

#: Seconds a caller is asked to wait (Retry-After) when the database cannot be reached.
DATABASE_RETRY_AFTER_S = 5
DATABASE_UNAVAILABLE_MESSAGE = (
    "The studio cannot reach its database right now; try again in a few seconds."
)


class FieldProblem(BaseModel):
    """One field at fault: `field` is a dotted path into the request (e.g. `params.width`)."""

    field: str
    message: str


class ErrorBody(BaseModel):
    """A machine-readable `code`, a `message` for people, and the fields at fault if any."""

    code: str
    message: str
    fields: list[FieldProblem] = []


class ErrorResponse(BaseModel):
    """Every JSON error: a machine-readable code, a human message, and the fields at fault."""

    error: ErrorBody


#: HTTP status of each stable error code a domain error may carry: the one table that says
#: how the studio's refusals map to HTTP (a code not listed answers 409 Conflict).
STATUS_BY_CODE: dict[str, int] = {
    "bad_request": 400,
    "not_authenticated": 401,
    "budget_exceeded": 402,
    "forbidden": 403,
    "not_found": 404,
    "too_large": 413,
    "unsupported_media_type": 415,
    "invalid_request": 422,
    "rate_limited": 429,
}


def status_for(code: str) -> int:
    """The HTTP status of a domain error's `code` (409 for a state that forbids the action)."""
    return STATUS_BY_CODE.get(code, 409)


class StudioError(Exception):
    """Base of every refusal the studio answers: HTTP status, stable code, message, fields.

    Routes let these travel: the handler installed by `install_error_handlers` answers the
    API in the shared JSON shape and pages with the error page, or with the page's own
    rendering when the route registered one (`answer_refusals_with`).
    """

    def __init__(
        self,
        status_code: int,
        code: str,
        message: str,
        fields: list[FieldProblem] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.message = message
        self.fields = fields or []
        self.headers = headers or {}

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class FieldError:
    """One problem with one request field, worded so a person can fix it.

    `field` is the path of the field in the request as the service takes it: a top-level
    name (`prompt`, `count`, `reference_images`) or a dotted path (`params.width`).
    """

    field: str
    message: str

    def __str__(self) -> str:
        if not self.field or self.message.startswith(self.field):
            return self.message
        return f"{self.field}: {self.message}"


class RequestInvalid(StudioError, ValueError):
    """Our own validation refused a request before anything was stored or sent (422)."""

    def __init__(self, errors: Sequence[FieldError]) -> None:
        self.errors = list(errors)
        summary = "; ".join(str(e) for e in self.errors[:5]) or "invalid request"
        super().__init__(
            422,
            "invalid_request",
            f"Check these fields: {summary}",
            [FieldProblem(field=e.field or "request", message=e.message) for e in self.errors],
        )

    def at_paths(self, path: Callable[[str], str]) -> RequestInvalid:
        """The same refusal with each field renamed by `path` (a name to its request path)."""
        return RequestInvalid([FieldError(path(e.field), e.message) for e in self.errors])


#: A page's own answer to a refusal (a form with its field errors, a card with a notice), or
#: None to leave it to the error page.
RefusalPage = Callable[[StudioError], Response | None]


def answer_refusals_with(request: Request, render: RefusalPage) -> None:
    """Have this page request answer a `StudioError` with `render` instead of the error page.

    The handler calls it after the request's database session has been rolled back and
    closed, so nothing the refused operation flushed is kept; `render` reads what it needs
    in a session of its own.
    """
    request.state.refusal_page = render


class NotAuthenticated(StudioError):
    def __init__(self, message: str = "Sign in to continue.") -> None:
        super().__init__(401, "not_authenticated", message)


class NotFound(StudioError):
    def __init__(self, what: str = "That item") -> None:
        super().__init__(404, "not_found", f"{what} was not found in this team.")


class Forbidden(StudioError):
    def __init__(self, message: str = "Your role in this team does not allow that.") -> None:
        super().__init__(403, "forbidden", message)


def error_json(
    status_code: int,
    code: str,
    message: str,
    fields: list[FieldProblem] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = ErrorResponse(error=ErrorBody(code=code, message=message, fields=fields or []))
    return JSONResponse(body.model_dump(), status_code=status_code, headers=headers)


def wants_json(request: Request) -> bool:
    if request.url.path.startswith("/api/"):
        return True
    accept = request.headers.get("accept", "")
    return "application/json" in accept and "text/html" not in accept


_STATUS_CODES = {
    400: "bad_request",
    401: "not_authenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "rate_limited",
    500: "internal_error",
    503: "service_unavailable",
}

_DESCRIPTIONS = {
    400: "The request could not be read.",
    401: "No valid session or API token (`Authorization: Bearer fts_...`).",
    402: "The request would cross a monthly budget.",
    403: "Your role in this team does not allow this.",
    404: "Not found in your team (another team's objects are never revealed).",
    409: "The object is in a state that does not allow this.",
    413: "The request is too large.",
    415: "The request body has a content type this route does not read.",
    422: "The request is invalid; `error.fields` names each field at fault.",
    429: "Too many requests for this API token; wait for `Retry-After` seconds.",
    500: "An unexpected error on the server; it was logged.",
    503: "A service the studio needs (storage, database) is unavailable; retry shortly.",
}


def error_responses(*status_codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries saying these statuses answer with the shared error shape."""
    responses: dict[int | str, dict[str, Any]] = {}
    for status in status_codes:
        entry: dict[str, Any] = {
            "model": ErrorResponse,
            "description": _DESCRIPTIONS.get(status, "An error in the shared shape."),
        }
        if status == 429:
            entry["headers"] = {
                "Retry-After": {
                    "description": "Seconds to wait before the next request.",
                    "schema": {"type": "integer"},
                }
            }
        responses[status] = entry
    return responses


def error_page(request: Request, status_code: int, message: str, **kwargs: Any) -> Response:
    """The plain error page, with the normal layout and nav for a signed-in caller.

    The caller comes as `request.state.actor_view`: plain values captured when the request
    authenticated, because by the time an error is rendered the request's database session
    has ended and the caller's rows can no longer be read.
    """
    from app.templating import templates

    return templates.TemplateResponse(
        request,
        "partials/error.html",
        {
            "status_code": status_code,
            "message": message,
            "actor": getattr(request.state, "actor_view", None),
        },
        status_code=status_code,
        **kwargs,
    )


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
            # Imported here: the catalogue imports this module, and app.db (through the
            # settings) imports the catalogue.
            from app.db import database_unavailable

            if started or not database_unavailable(exc):
                raise
            response = database_unavailable_response(Request(scope), exc)
            await response(scope, receive, send)


def _location(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header", "form")]
    return ".".join(parts) or "request"


#: FastAPI's detail when a request body cannot be decoded at all.
_BODY_PARSE_FAILED = "There was an error parsing the body"


def install_error_handlers(app: FastAPI) -> None:
    # Innermost middleware (added first): requests it refuses still pass through the
    # observability middleware added later, so they are logged and counted.
    app.add_middleware(RefuseNulCharacters)
    # Outside the NUL check, inside the observability middleware (added later, so outer).
    app.add_middleware(DatabaseUnavailable)

    @app.exception_handler(StudioError)
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

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        fields = [
            FieldProblem(field=_location(err.get("loc", ())), message=str(err.get("msg", "")))
            for err in exc.errors()
        ]
        summary = "; ".join(f"{f.field}: {f.message}" for f in fields[:5])
        return error_json(422, "invalid_request", f"Check these fields: {summary}", fields)

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception) -> Response:
        # The last line of defence: a bug must still answer in the shared shape, and be logged
        # with its traceback so it gets fixed rather than hidden.
        from app.db import database_unavailable

        if database_unavailable(exc):
            return database_unavailable_response(request, exc)
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return error_json(
            500,
            "internal_error",
            "Something went wrong on our side and it has been logged; try again in a moment.",
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code = _STATUS_CODES.get(exc.status_code, "error")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        headers = dict(exc.headers or {})
        if exc.status_code == 400:
            from app.limits import form_limit_problem

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
