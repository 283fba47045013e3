"""The OpenAPI document at /openapi.json: the JSON API only, with its bearer-token scheme."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from app.settings import Settings, get_settings

API_PREFIX = "/api/"
_REF = re.compile(r'"#/components/schemas/([^"]+)"')

#: What completes the document with values that are settings (a limit such as
#: MAX_BATCH_SIZE): each is called with the document and the settings when it is built, so
#: /openapi.json advertises the limits this studio is configured with.
SettingsHook = Callable[[dict[str, Any], Settings], None]
_SETTINGS_HOOKS: list[SettingsHook] = []


def configured_by_settings(hook: SettingsHook) -> SettingsHook:
    """Register `hook` to fill values from the settings into the document (a decorator)."""
    _SETTINGS_HOOKS.append(hook)
    return hook


def _used_schemas(document: Any, schemas: dict[str, Any]) -> set[str]:
    """Names of the component schemas `document` refers to, directly or through others."""
    seen: set[str] = set()
    pending = set(_REF.findall(json.dumps(document)))
    while pending:
        name = pending.pop()
        if name in seen or name not in schemas:
            continue
        seen.add(name)
        pending |= set(_REF.findall(json.dumps(schemas[name]))) - seen
    return seen


def api_schema(app: FastAPI) -> dict[str, Any]:
    """The app's OpenAPI document reduced to /api/ routes: pages, webhooks and probes are
    not part of the API, so they are left out with the schemas only they use."""
    schema = get_openapi(
        title=app.title,
        version=app.version,
        description=(
            f"{app.description}\n\n"
            "Authenticate with a personal API token from the API tokens page (/account/tokens): "
            "`Authorization: Bearer fts_...`. Every error answers "
            '`{"error": {"code": ..., "message": ..., "fields": [...]}}`.'
        ),
        routes=app.routes,
    )
    schema["paths"] = {p: v for p, v in schema.get("paths", {}).items() if p.startswith(API_PREFIX)}
    components = schema.setdefault("components", {})
    schemas = components.get("schemas", {})
    keep = _used_schemas(schema["paths"], schemas)
    components["schemas"] = {k: v for k, v in schemas.items() if k in keep}
    components["securitySchemes"] = {
        "apiToken": {
            "type": "http",
            "scheme": "bearer",
            "description": "A personal API token (fts_...).",
        }
    }
    schema["security"] = [{"apiToken": []}]
    settings = get_settings()
    for hook in _SETTINGS_HOOKS:
        hook(schema, settings)
    return schema


def install_openapi(app: FastAPI) -> None:
    """Serve `api_schema` at /openapi.json (built once per app, on first request, from the
    settings then in force)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = api_schema(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
