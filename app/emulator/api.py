"""The emulator's HTTP face: BFL's endpoints plus admin endpoints under /_emulator."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Body, FastAPI, Header, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError

from app.emulator.config import EmulatorConfig
from app.emulator.service import EmulatorRefusal, EmulatorService
from app.emulator.webhook_delivery import WebhookDispatcher

XKey = Annotated[str | None, Header(alias="x-key")]
TaskId = Annotated[str, Query(alias="id")]


class DroppedConnection(Exception):
    """Raised mid-answer so the server closes the connection: a [[drop]] submission."""


class _HideDroppedConnections(logging.Filter):
    """Keeps deliberate [[drop]] disconnects out of the server's error log."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
            exc = exc.exceptions[0]
        return not isinstance(exc, DroppedConnection)


def _install_log_filter() -> None:
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _HideDroppedConnections) for f in logger.filters):
        logger.addFilter(_HideDroppedConnections())


async def _dropped_body() -> AsyncIterator[bytes]:
    # The status line and headers are already out; ending the body with an error makes the
    # server close the socket, which a client sees as a dropped connection after sending.
    raise DroppedConnection("emulated dropped connection")
    yield b""  # pragma: no cover - makes this function an async generator


def _base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _polling_base(request: Request, config: EmulatorConfig) -> str:
    """Where polling_url points: configured, or the submit host swapped, under /regional.

    A different host (127.0.0.1 <-> localhost) and path proves that clients poll the URL they
    were given rather than rebuilding it from the base URL.
    """
    if config.polling_base_url:
        return config.polling_base_url.rstrip("/")
    url = request.base_url
    host = url.hostname or "127.0.0.1"
    host = {"127.0.0.1": "localhost", "localhost": "127.0.0.1"}.get(host, host)
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{url.port}" if url.port else host
    return f"{url.scheme}://{netloc}/regional"


def _config_view(config: EmulatorConfig) -> dict[str, Any]:
    view = config.model_dump(mode="json")
    if view.get("api_key"):
        view["api_key"] = "***"
    return view


def create_app(config: EmulatorConfig | None = None) -> FastAPI:
    """A BFL-compatible app with its own in-memory account."""
    service = EmulatorService(config or EmulatorConfig())
    dispatcher = WebhookDispatcher(service)
    _install_log_filter()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        dispatcher.stop()

    app = FastAPI(title="BFL emulator", lifespan=lifespan)
    app.state.emulator = service
    app.state.webhooks = dispatcher

    @app.exception_handler(EmulatorRefusal)
    async def refusal(_request: Request, exc: EmulatorRefusal) -> JSONResponse:
        body = exc.body if exc.body is not None else {"detail": exc.detail}
        return JSONResponse(body, exc.status_code, headers=exc.headers)

    @app.get("/")
    def index() -> dict[str, Any]:
        return {"service": "BFL emulator", "synthetic": True, "admin": "/_emulator/config"}

    @app.post("/v1/{model}")
    async def submit(model: str, request: Request, x_key: XKey = None) -> Response:
        try:
            service.check_available()
            service.check_key(x_key)
            raw = await request.body()
            try:
                body: Any = json.loads(raw) if raw else None
            except ValueError:
                raise EmulatorRefusal(
                    422, [{"loc": ["body"], "msg": "JSON decode error", "type": "json_invalid"}]
                ) from None
            accepted = service.submit(
                model,
                body,
                base_url=_base_url(request),
                polling_base=_polling_base(request, service.config),
            )
        except EmulatorRefusal as exc:
            service.record_refusal(model, exc.status_code)
            raise
        if service.config.answer_delay_s > 0:
            # The task exists and is charged already; only its answer is late.
            await asyncio.sleep(service.config.answer_delay_s)
        if accepted.drop:
            if service.config.drop_mode == "hang":
                await asyncio.sleep(service.config.drop_hang_s)
            return StreamingResponse(_dropped_body(), media_type="application/json")
        return JSONResponse(accepted.body, headers=accepted.headers)

    @app.get("/v1/get_result")
    def get_result(request: Request, task_id: TaskId, x_key: XKey = None) -> dict[str, Any]:
        service.check_available()
        service.check_key(x_key)
        return service.get_result(task_id, delivery_base=_base_url(request))

    @app.get("/regional/v1/get_result")
    def regional_get_result(
        request: Request, task_id: TaskId, x_key: XKey = None
    ) -> dict[str, Any]:
        service.check_available()
        service.check_key(x_key)
        return service.get_result(task_id, delivery_base=_base_url(request))

    @app.get("/v1/credits")
    def credits(x_key: XKey = None) -> dict[str, Any]:
        service.check_available()
        service.check_key(x_key)
        return {"credits": float(service.credits())}

    @app.get("/delivery/{name}")
    def delivery(name: str, x_key: XKey = None) -> Response:
        content, content_type = service.delivery(name, x_key_present=bool(x_key))
        return Response(content, media_type=content_type, headers={"cache-control": "private"})

    # --- admin ---------------------------------------------------------------------------

    @app.get("/_emulator/config")
    def get_config() -> dict[str, Any]:
        return _config_view(service.config)

    @app.patch("/_emulator/config")
    def patch_config(changes: Annotated[dict[str, Any], Body()]) -> Response:
        try:
            new = service.update_config(changes)
        except ValidationError as exc:
            errors = exc.errors(include_url=False, include_context=False)
            return JSONResponse({"detail": json.loads(json.dumps(errors, default=str))}, 422)
        dispatcher.poke()
        return JSONResponse(_config_view(new))

    @app.get("/_emulator/submissions")
    def submissions() -> dict[str, Any]:
        log = service.submissions()
        return {"count": len(log), "submissions": log}

    @app.get("/_emulator/refusals")
    def refusals() -> dict[str, Any]:
        log = service.refusals()
        return {"count": len(log), "refusals": log}

    @app.get("/_emulator/deliveries")
    def deliveries() -> dict[str, Any]:
        return {"deliveries": service.deliveries()}

    @app.get("/_emulator/webhooks")
    def webhooks() -> dict[str, Any]:
        return {"webhooks": service.webhook_log()}

    @app.get("/_emulator/state")
    def state() -> dict[str, Any]:
        return {
            "active_tasks": service.active_tasks(),
            "peak_active_tasks": service.peak_active_tasks(),
            "account_cap_refusals": service.account_cap_refusals(),
            "credits": float(service.credits()),
        }

    @app.post("/_emulator/clock")
    def advance_clock(advance_s: Annotated[float, Body(embed=True, ge=0)]) -> dict[str, Any]:
        offset = service.advance_clock(advance_s)
        dispatcher.poke()
        return {"offset_s": offset}

    @app.post("/_emulator/reset")
    def reset() -> dict[str, Any]:
        service.reset()
        return {"reset": True}

    return app
