"""One error shape for the JSON API and the exception handlers that produce it."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)


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


class StudioError(Exception):
    """An error a route raises to answer with the shared shape (JSON) or a plain page."""

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


def _location(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header", "form")]
    return ".".join(parts) or "request"


#: FastAPI's detail when a request body cannot be decoded at all.
_BODY_PARSE_FAILED = "There was an error parsing the body"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StudioError)
    async def studio_error(request: Request, exc: StudioError) -> Response:
        if isinstance(exc, NotAuthenticated) and not wants_json(request):
            target = "/login"
            if request.method == "GET":
                target += "?next=" + quote(request.url.path, safe="/")
            if request.headers.get("hx-request"):
                return Response(status_code=204, headers={"HX-Redirect": target})
            return RedirectResponse(target, status_code=303)
        if wants_json(request):
            return error_json(exc.status_code, exc.code, exc.message, exc.fields, exc.headers)
        from app.templating import templates

        return templates.TemplateResponse(
            request,
            "partials/error.html",
            {
                "status_code": exc.status_code,
                "message": exc.message,
                "actor": getattr(request.state, "actor", None),
            },
            status_code=exc.status_code,
            headers=exc.headers,
        )

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
        if exc.status_code == 400 and message == _BODY_PARSE_FAILED:
            # A body that is not valid JSON (or not text at all) is an invalid request like any
            # other: one status, one documented shape, naming the body as the field at fault.
            fields = [FieldProblem(field="body", message="send a valid JSON (UTF-8) body")]
            return error_json(422, "invalid_request", "The request body is not valid JSON.", fields)
        if wants_json(request):
            return error_json(exc.status_code, code, message, headers=headers)
        from app.templating import templates

        return templates.TemplateResponse(
            request,
            "partials/error.html",
            {
                "status_code": exc.status_code,
                "message": message,
                "actor": getattr(request.state, "actor", None),
            },
            status_code=exc.status_code,
            headers=headers,
        )
