"""The studio's error family and its one mapping to HTTP status codes and the JSON shape.

Every refusal the studio makes is a `StudioError`: our own request validation
(`RequestInvalid`), a refused job operation (`app.jobs.service.JobError`), a crossed budget
(`app.costs.service.BudgetExceeded`), and the plumbing errors below. Each carries its HTTP
status, a stable code, a message for people and the request fields at fault; the handlers in
`app.error_handlers` turn them into the JSON shape (API) or a page. BFL's own answers are
another family (`app.bfl.errors`), handled by the pipeline, never sent to a caller as such.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

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
    "access_limited": 403,
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


CODE_BY_STATUS = {
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
