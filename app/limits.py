"""The limits every way in shares: request sizes counted while bodies stream in, the limits of
form parsing, and the one list of limits the API, the page and /openapi.json advertise.

BFL's facts (prompt length, reference images per model, sizes, field ranges) live in
`app.bfl.catalogue`; the studio's own policy (batch size, active-task cap, byte limits) in
`app.settings`. The job service enforces both for the API and the page form alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.responses import Response
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.bfl.catalogue import MAX_REFERENCE_IMAGES, catalogue_as_dict
from app.errors import FieldProblem, StudioError, error_json, wants_json
from app.settings import Settings, get_settings
from app.templating import error_page
from app.units import size_text

#: Routes that queue jobs (and the generate form's reference upload): the only ones whose
#: bodies may carry reference images. Asking for approval sends the same body as queuing.
JOB_ROUTES = frozenset(
    {
        ("POST", "/api/v1/jobs"),
        ("POST", "/generate"),
        ("POST", "/api/v1/approvals"),
        ("POST", "/approvals"),
        ("POST", "/references"),
    }
)
#: Routes that read one image file someone drops (a recipe import): bounded like a reference.
IMAGE_ROUTES = frozenset({("POST", "/recipes/import")})


def studio_limits(settings: Settings | None = None) -> dict[str, int]:
    """The studio's configured limits, by the names the API and the page advertise them."""
    settings = settings or get_settings()
    return {
        "max_batch_size": settings.MAX_BATCH_SIZE,
        "account_active_task_cap": settings.BFL_MAX_ACTIVE_TASKS,
        "max_request_bytes": settings.MAX_REQUEST_BYTES,
        "max_job_request_bytes": settings.MAX_JOB_REQUEST_BYTES,
        "max_reference_image_bytes": settings.MAX_REFERENCE_IMAGE_BYTES,
        "max_reference_image_pixels": settings.MAX_REFERENCE_IMAGE_PIXELS,
        "max_form_fields": settings.MAX_FORM_FIELDS,
        "max_form_field_bytes": settings.MAX_FORM_FIELD_BYTES,
    }


def advertised_catalogue(settings: Settings | None = None) -> dict[str, Any]:
    """The model catalogue with every limit in force, as GET /api/v1/models and the generate
    page's script read it: BFL's facts from the catalogue, the studio's from the settings."""
    settings = settings or get_settings()
    catalogue = catalogue_as_dict(settings.CREDIT_PRICE_USD)
    catalogue["limits"] = {**catalogue["limits"], **studio_limits(settings)}
    return catalogue


@dataclass(frozen=True)
class BodyLimit:
    """The most bytes a request's body may have, and the setting that says so."""

    max_bytes: int
    setting: str
    job_route: bool

    def message(self) -> str:
        """What a caller over the limit is told: the limit, and what to change."""
        size = size_text(self.max_bytes)
        if self.job_route:
            each = size_text(get_settings().MAX_REFERENCE_IMAGE_BYTES)
            return (
                f"The request body is larger than {size}, the most one job request may carry "
                f"({self.setting}); send fewer or smaller reference images "
                f"(at most {MAX_REFERENCE_IMAGES}, each at most {each})."
            )
        return (
            f"The request body is larger than {size}, the most this studio accepts here "
            f"({self.setting}); send a smaller body."
        )


def body_limit_for(method: str, path: str) -> BodyLimit:
    """The body limit of a request, by the kind of route it goes to (from the settings)."""
    settings = get_settings()
    if (method.upper(), path.rstrip("/") or "/") in JOB_ROUTES:
        return BodyLimit(settings.MAX_JOB_REQUEST_BYTES, "MAX_JOB_REQUEST_BYTES", True)
    if (method.upper(), path.rstrip("/") or "/") in IMAGE_ROUTES:
        return BodyLimit(settings.MAX_REFERENCE_IMAGE_BYTES, "MAX_REFERENCE_IMAGE_BYTES", False)
    return BodyLimit(settings.MAX_REQUEST_BYTES, "MAX_REQUEST_BYTES", False)


class BodyTooLarge(StarletteHTTPException):
    """Raised from `receive` when a body crosses its limit; answered 413.

    An HTTPException on purpose: FastAPI passes those through its body reading untouched (any
    other error there becomes a 400 "error parsing the body").
    """

    def __init__(self, limit: BodyLimit) -> None:
        super().__init__(status_code=413, detail=limit.message())
        self.limit = limit


class _BadContentLength(Exception):
    pass


def _declared_length(scope: Scope) -> int | None:
    """The Content-Length the client declared; _BadContentLength when it is not one number."""
    values = {v.strip() for k, v in scope.get("headers", ()) if k.lower() == b"content-length"}
    if not values:
        return None
    if len(values) != 1:
        raise _BadContentLength
    text = values.pop()
    if not text.isdigit() or len(text) > 18:
        raise _BadContentLength
    return int(text)


def _too_large_response(scope: Scope, limit: BodyLimit) -> Response:
    request = Request(scope)
    message = limit.message()
    if wants_json(request):
        return error_json(413, "too_large", message)
    return error_page(request, 413, message)


class RequestSizeLimit:
    """Counts each request body's bytes as they stream in and answers 413 past the limit.

    A declared Content-Length over the limit is refused before a byte is read; a body sent
    without one (chunked) is refused as soon as the count crosses the limit, so nothing ever
    holds more than the limit in memory. The app sees the refusal as a `BodyTooLarge` raised
    from `receive`; should anything swallow it, the answer is replaced by the 413 all the same.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = body_limit_for(scope.get("method", "GET"), scope.get("path", ""))
        try:
            declared = _declared_length(scope)
        except _BadContentLength:
            response = error_json(
                400,
                "bad_request",
                "The Content-Length header must be one whole number of bytes.",
                [FieldProblem(field="Content-Length", message="send one whole number")],
            )
            await response(scope, receive, send)
            return
        if declared is not None and declared > limit.max_bytes:
            await _too_large_response(scope, limit)(scope, receive, send)
            return

        received = 0
        exceeded = False
        started = False
        replaced = False

        async def counting_receive() -> Message:
            nonlocal received, exceeded
            if exceeded:
                raise BodyTooLarge(limit)
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit.max_bytes:
                    exceeded = True
                    raise BodyTooLarge(limit)
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started, replaced
            if replaced:
                return
            if message["type"] == "http.response.start":
                started = True
                if exceeded and message.get("status") != 413:
                    # Something caught the refusal and answered otherwise; a body over the
                    # limit is answered 413 whatever the route made of it.
                    replaced = True
                    await _too_large_response(scope, limit)(scope, receive, send)
                    return
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except BodyTooLarge:
            if started:
                raise
            await _too_large_response(scope, limit)(scope, receive, send)


# --- Forms ------------------------------------------------------------------------------------


def form_limits(job_route: bool = False, image_route: bool = False) -> dict[str, Any]:
    """Starlette's form-parsing limits: files only where jobs are queued (as many as the most
    reference images any model takes) or one image is read, fields from settings."""
    settings = get_settings()
    files = MAX_REFERENCE_IMAGES if job_route else 1 if image_route else 0
    return {
        "max_files": files,
        "max_fields": settings.MAX_FORM_FIELDS,
        "max_part_size": settings.MAX_FORM_FIELD_BYTES,
    }


def form_limit_problem(request: Request, detail: str) -> StudioError | None:
    """The studio's answer to Starlette's refusal of a form over a parsing limit, or None.

    Starlette says only "Too many files ..." and the like (as a 400); this names the limit,
    the setting behind it and what to change.
    """
    settings = get_settings()
    if detail.startswith("Too many files"):
        if body_limit_for(request.method, request.url.path).job_route:
            message = f"at most {MAX_REFERENCE_IMAGES} reference images; send fewer files"
            return StudioError(
                422,
                "invalid_request",
                f"reference_images: {message}",
                [FieldProblem(field="reference_images", message=message)],
            )
        return StudioError(413, "too_large", "This form takes no files; send it without any.")
    if detail.startswith("Too many fields"):
        return StudioError(
            413,
            "too_large",
            f"The form has more than {settings.MAX_FORM_FIELDS} fields (MAX_FORM_FIELDS); "
            "send fewer fields.",
        )
    if detail.startswith(("Part exceeded", "Field exceeded")):
        size = size_text(settings.MAX_FORM_FIELD_BYTES)
        message = f"a form field is larger than {size} (MAX_FORM_FIELD_BYTES); shorten it"
        return StudioError(
            422,
            "invalid_request",
            message[0].upper() + message[1:] + ".",
            [FieldProblem(field="form", message=message)],
        )
    return None


async def read_form(request: Request) -> FormData:
    """The request's form, parsed within the limits of its route (parsed once, then cached).

    Raises `BodyTooLarge` (413) or a `StudioError` (413/422) naming the limit crossed.
    """
    job_route = body_limit_for(request.method, request.url.path).job_route
    image_route = (request.method.upper(), request.url.path.rstrip("/")) in IMAGE_ROUTES
    try:
        return await request.form(**form_limits(job_route, image_route))
    except StarletteHTTPException as exc:
        if isinstance(exc, BodyTooLarge) or exc.status_code != 400:
            raise
        problem = form_limit_problem(request, str(exc.detail))
        if problem is None:
            raise
        raise problem from None
