"""The Jinja2 environment shared by every page, with the globals all layouts need."""

from __future__ import annotations

from pathlib import Path

from fastapi.templating import Jinja2Templates

from app.settings import get_settings

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES_DIR = ROOT / "templates"
STATIC_DIR = ROOT / "static"

templates = Jinja2Templates(directory=str(TEMPLATES_DIR))
templates.env.globals["bfl_emulated"] = lambda: get_settings().bfl_emulated
