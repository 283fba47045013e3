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


async def _refusal(_request: Request, exc: EmulatorRefusal) -> JSONResponse:
    """Answer a refused request with BFL's body, status and headers for that refusal."""
    body = exc.body if exc.body is not None else {"detail": exc.detail}
    return JSONResponse(body, exc.status_code, headers=exc.headers)


def _index() -> dict[str, Any]:
    """What this server is: a synthetic BFL, with its admin entry point."""
    return {"service": "BFL emulator", "synthetic": True, "admin": "/_emulator/config"}


def _decode_body(raw: bytes) -> Any:
    """The submitted JSON body (None when empty); raises `EmulatorRefusal` 422 if not JSON."""
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        raise EmulatorRefusal(
            422, [{"loc": ["body"], "msg": "JSON decode error", "type": "json_invalid"}]
        ) from None


class _BflRoutes:
    """BFL's own endpoints (submit, poll, credits, delivery) over one emulated account."""

    def __init__(self, service: EmulatorService) -> None:
        self.service = service

    def register(self, app: FastAPI) -> None:
        """Add BFL's endpoints to `app`."""
        app.add_api_route("/v1/{model}", self.submit, methods=["POST"])
        app.add_api_route("/v1/get_result", self.get_result, methods=["GET"])
        app.add_api_route("/regional/v1/get_result", self.regional_get_result, methods=["GET"])
        app.add_api_route("/v1/credits", self.credits, methods=["GET"])
        app.add_api_route("/delivery/{name}", self.delivery, methods=["GET"])

    async def submit(self, model: str, request: Request, x_key: XKey = None) -> Response:
        """Accept a task (or refuse it as BFL would), then answer late or drop if configured."""
        service = self.service
        try:
            service.check_available()
            service.check_key(x_key)
            body = _decode_body(await request.body())
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

    def get_result(self, request: Request, task_id: TaskId, x_key: XKey = None) -> dict[str, Any]:
        """A task's status and, when ready, its result with a delivery URL."""
        self.service.check_available()
        self.service.check_key(x_key)
        return self.service.get_result(task_id, delivery_base=_base_url(request))

    def regional_get_result(
        self, request: Request, task_id: TaskId, x_key: XKey = None
    ) -> dict[str, Any]:
        """The same as `get_result`, under the regional polling path."""
        self.service.check_available()
        self.service.check_key(x_key)
        return self.service.get_result(task_id, delivery_base=_base_url(request))

    def credits(self, x_key: XKey = None) -> dict[str, Any]:
        """The account's remaining credits."""
        self.service.check_available()
        self.service.check_key(x_key)
        return {"credits": float(self.service.credits())}

    def delivery(self, name: str, x_key: XKey = None) -> Response:
        """A delivered image's bytes."""
        content, content_type = self.service.delivery(name, x_key_present=bool(x_key))
        return Response(content, media_type=content_type, headers={"cache-control": "private"})


class _AdminRoutes:
    """Admin endpoints under /_emulator: configuration, logs, state, clock and reset."""

    def __init__(self, service: EmulatorService, dispatcher: WebhookDispatcher) -> None:
        self.service = service
        self.dispatcher = dispatcher

    def register(self, app: FastAPI) -> None:
        """Add the admin endpoints to `app`."""
        app.add_api_route("/_emulator/config", self.get_config, methods=["GET"])
        app.add_api_route("/_emulator/config", self.patch_config, methods=["PATCH"])
        app.add_api_route("/_emulator/submissions", self.submissions, methods=["GET"])
        app.add_api_route("/_emulator/refusals", self.refusals, methods=["GET"])
        app.add_api_route("/_emulator/deliveries", self.deliveries, methods=["GET"])
        app.add_api_route("/_emulator/webhooks", self.webhooks, methods=["GET"])
        app.add_api_route("/_emulator/state", self.state, methods=["GET"])
        app.add_api_route("/_emulator/clock", self.advance_clock, methods=["POST"])
        app.add_api_route("/_emulator/reset", self.reset, methods=["POST"])

    def get_config(self) -> dict[str, Any]:
        """The current configuration, the API key masked."""
        return _config_view(self.service.config)

    def patch_config(self, changes: Annotated[dict[str, Any], Body()]) -> Response:
        """Change some settings; 422 with pydantic's errors if a value is refused."""
        try:
            new = self.service.update_config(changes)
        except ValidationError as exc:
            errors = exc.errors(include_url=False, include_context=False)
            return JSONResponse({"detail": json.loads(json.dumps(errors, default=str))}, 422)
        self.dispatcher.poke()
        return JSONResponse(_config_view(new))

    def submissions(self) -> dict[str, Any]:
        """Every accepted submission, oldest first."""
        log = self.service.submissions()
        return {"count": len(log), "submissions": log}

    def refusals(self) -> dict[str, Any]:
        """Every refused submission, oldest first."""
        log = self.service.refusals()
        return {"count": len(log), "refusals": log}

    def deliveries(self) -> dict[str, Any]:
        """Every delivery download served."""
        return {"deliveries": self.service.deliveries()}

    def webhooks(self) -> dict[str, Any]:
        """Every webhook delivery attempt."""
        return {"webhooks": self.service.webhook_log()}

    def state(self) -> dict[str, Any]:
        """Active and peak task counts, account-cap refusals and credits left."""
        service = self.service
        return {
            "active_tasks": service.active_tasks(),
            "peak_active_tasks": service.peak_active_tasks(),
            "account_cap_refusals": service.account_cap_refusals(),
            "credits": float(service.credits()),
        }

    def advance_clock(self, advance_s: Annotated[float, Body(embed=True, ge=0)]) -> dict[str, Any]:
        """Move the emulated clock forward by `advance_s` seconds; returns the total offset."""
        offset = self.service.advance_clock(advance_s)
        self.dispatcher.poke()
        return {"offset_s": offset}

    def reset(self) -> dict[str, Any]:
        """Forget every task and log entry; restore the starting config and balance."""
        self.service.reset()
        return {"reset": True}


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
    app.exception_handler(EmulatorRefusal)(_refusal)
    app.add_api_route("/", _index, methods=["GET"], name="index")
    _BflRoutes(service).register(app)
    _AdminRoutes(service, dispatcher).register(app)
    return app
