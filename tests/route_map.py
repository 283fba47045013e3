"""Every route the studio serves, read from the app itself, for tests that sweep them all."""

from __future__ import annotations

import re
from dataclasses import dataclass

from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts

_PARAM = re.compile(r"{([^}:]+)(?::[^}]+)?}")


@dataclass(frozen=True)
class RouteCall:
    """One method of one route: `path` is the template, e.g. /api/v1/jobs/{job_id}."""

    method: str
    path: str
    endpoint: str

    @property
    def params(self) -> list[str]:
        return _PARAM.findall(self.path)

    @property
    def is_api(self) -> bool:
        return self.path.startswith("/api/")

    def fill(self, values: dict[str, str]) -> str:
        return _PARAM.sub(lambda m: values[m.group(1)], self.path)


def route_calls(app: FastAPI) -> list[RouteCall]:
    """Every (method, path) the app routes to one of our endpoints (HEAD and OPTIONS aside)."""
    calls: list[RouteCall] = []
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        if not isinstance(route, APIRoute):
            continue
        endpoint = f"{route.endpoint.__module__}.{route.endpoint.__name__}"
        for method in sorted(context.methods or ()):
            if method in ("HEAD", "OPTIONS"):
                continue
            calls.append(RouteCall(method=method, path=str(context.path), endpoint=endpoint))
    return calls
