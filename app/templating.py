"""The Jinja2 environment shared by every page, its globals, and the plain error page."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import Response
from fastapi.templating import Jinja2Templates

from app.settings import get_settings

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES_DIR = ROOT / "templates"
STATIC_DIR = ROOT / "static"

templates = Jinja2Templates(directory=str(TEMPLATES_DIR))
templates.env.globals["bfl_emulated"] = lambda: get_settings().bfl_emulated


def error_page(request: Request, status_code: int, message: str, **kwargs: Any) -> Response:
    """The plain error page, with the normal layout and nav for a signed-in caller.

    The caller comes as `request.state.actor_view`: plain values captured when the request
    authenticated, because by the time an error is rendered the request's database session
    has ended and the caller's rows can no longer be read.
    """
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
