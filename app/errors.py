"""One error shape for the JSON API and the exception handlers that produce it."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException


class FieldProblem(BaseModel):
    field: str
    message: str


class ErrorBody(BaseModel):
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
}


def _location(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header", "form")]
    return ".".join(parts) or "request"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StudioError)
    async def studio_error(request: Request, exc: StudioError) -> Response:
        if isinstance(exc, NotAuthenticated) and not wants_json(request):
            target = "/login"
            if request.method == "GET":
                target += f"?next={request.url.path}"
            if request.headers.get("hx-request"):
                return Response(status_code=204, headers={"HX-Redirect": target})
            return RedirectResponse(target, status_code=303)
        if wants_json(request):
            return error_json(exc.status_code, exc.code, exc.message, exc.fields, exc.headers)
        from app.templating import templates

        return templates.TemplateResponse(
            request,
            "partials/error.html",
            {"status_code": exc.status_code, "message": exc.message},
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

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code = _STATUS_CODES.get(exc.status_code, "error")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        headers = dict(exc.headers or {})
        if wants_json(request):
            return error_json(exc.status_code, code, message, headers=headers)
        from app.templating import templates

        return templates.TemplateResponse(
            request,
            "partials/error.html",
            {"status_code": exc.status_code, "message": message},
            status_code=exc.status_code,
            headers=headers,
        )
