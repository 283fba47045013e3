"""The emulator's behaviour: accepts tasks, reports their state, serves results, fails on demand.

All state is in memory behind one lock. A task's progress is computed from timestamps, so
no request handler sleeps while a task "runs".
"""

from __future__ import annotations

import base64
import email.utils
import heapq
import hmac
import io
import itertools
import math
import random
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from PIL import Image

from app.bfl import catalogue
from app.emulator.config import EmulatorConfig
from app.emulator.render import content_type_for, extension_for, render_image
from app.errors import RequestInvalid

Outcome = Literal["ready", "request_moderated", "content_moderated", "error", "not_found"]

# Prompt trigger words that make a task misbehave, for tests and demos.
TRIGGER_OUTCOMES: dict[str, Outcome] = {
    "[[request-moderated]]": "request_moderated",
    "[[content-moderated]]": "content_moderated",
    "[[error]]": "error",
    "[[not-found]]": "not_found",
}
TRIGGER_DROP = "[[drop]]"
TRIGGER_SLOW = "[[slow]]"

_STATUS_TEXT: dict[Outcome, str] = {
    "ready": "Ready",
    "request_moderated": "Request Moderated",
    "content_moderated": "Content Moderated",
    "error": "Error",
    "not_found": "Task not found",
}


class EmulatorRefusal(Exception):
    """An HTTP error answer: status, JSON `detail`, extra headers."""

    def __init__(
        self,
        status_code: int,
        detail: Any,
        headers: dict[str, str] | None = None,
        *,
        body: dict[str, Any] | None = None,
    ):
        super().__init__(f"{status_code}: {detail}")
        self.status_code = status_code
        self.detail = detail
        self.headers = headers or {}
        #: The whole JSON body, when it is not FastAPI's {"detail": ...}.
        self.body = body


@dataclass
class Task:
    """One accepted generation."""

    id: str
    model: str
    prompt: str
    seed: int
    width: int
    height: int
    output_format: str
    cost: Decimal
    created_at: float
    ready_at: float
    outcome: Outcome
    delivery_token: str
    base_url: str
    webhook_url: str | None = None
    webhook_secret: str | None = None

    @property
    def extension(self) -> str:
        return extension_for(self.output_format)

    def is_active(self, now: float) -> bool:
        return now < self.ready_at


@dataclass
class Accepted:
    """What `submit` hands back to the HTTP layer."""

    body: dict[str, Any]
    task: Task
    drop: bool
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class _Ledger:
    tasks: dict[str, Task] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)  # delivery token -> task id
    # Every accepted submission is kept (tests prove no double POSTs with it); the
    # download and webhook logs are for debugging, so only their recent entries are kept.
    submissions: list[dict[str, Any]] = field(default_factory=list)
    # Every refused submission (429, 503, 500, 4xx): tests count refused POSTs with it.
    refusals: list[dict[str, Any]] = field(default_factory=list)
    deliveries: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=1000))
    webhooks: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=1000))
    # The most tasks ever active at once, and how often the account's cap refused a POST: a
    # studio that keeps its cap (however many hosts it runs on) never reaches a refusal.
    peak_active: int = 0
    account_cap_refusals: int = 0


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat()


def _loggable_payload(payload: dict[str, Any]) -> dict[str, Any]:
    """The payload minus image data and secrets, as kept in the submission log."""
    shown = {k: v for k, v in payload.items() if k != "webhook_secret"}
    for name in catalogue.reference_field_names(catalogue.MAX_REFERENCE_IMAGES):
        if name in shown:
            shown[name] = "<image>"
    return shown


def _reference_sizes(payload: dict[str, Any]) -> list[tuple[int, int] | None]:
    """(width, height) of each base64 reference image, in field order; None for a URL or junk.

    BFL prices inputs by their megapixels, so the emulator reads them as BFL would.
    """
    sizes: list[tuple[int, int] | None] = []
    for name in catalogue.reference_field_names(catalogue.MAX_REFERENCE_IMAGES):
        value = payload.get(name)
        if not isinstance(value, str) or not value:
            continue
        size = None
        if "://" not in value[:16]:
            text = value.split(",", 1)[1] if value.startswith("data:") and "," in value else value
            try:
                with Image.open(io.BytesIO(base64.b64decode(text))) as image:
                    size = image.size
            except (ValueError, OSError, SyntaxError):
                size = None
        sizes.append(size)
    return sizes


def _checked_payload(model: str, body: Any) -> tuple[catalogue.ModelSpec, dict[str, Any]]:
    """The model and BFL payload for a submission; raises `EmulatorRefusal` 404/422 as BFL does."""
    try:
        spec = catalogue.get_model(model)
    except catalogue.UnknownModel:
        raise EmulatorRefusal(404, "Not Found") from None
    if not isinstance(body, dict):
        raise EmulatorRefusal(
            422,
            [
                {
                    "loc": ["body"],
                    "msg": "Input should be a valid dictionary",
                    "type": "dict_type",
                }
            ],
        )
    try:
        return spec, catalogue.validate_request(model, body)
    except RequestInvalid as exc:
        raise EmulatorRefusal(
            422,
            [
                {"loc": ["body", e.field], "msg": e.message, "type": "value_error"}
                for e in exc.errors
            ],
        ) from None


def _accepted_body(
    spec: catalogue.ModelSpec,
    task: Task,
    sizes: list[tuple[int, int] | None],
    *,
    polling_base: str,
) -> dict[str, Any]:
    """BFL's answer to an accepted submission: id, polling URL, and cost/megapixels on FLUX.2."""
    answer: dict[str, Any] = {
        "id": task.id,
        "polling_url": f"{polling_base}/v1/get_result?id={task.id}",
    }
    if spec.family == "FLUX.2":  # FLUX.1 endpoints do not report cost
        answer["cost"] = float(task.cost)
        answer["input_mp"] = float(sum(catalogue.reference_megapixels(x) for x in sizes))
        answer["output_mp"] = round(task.width * task.height / catalogue.MEGAPIXEL, 2)
    return answer


class _Prerenderer:
    """Draws a task's image while the task 'runs', as BFL has the image done by Ready time.

    Rendering on the first download instead would put the emulator's own CPU work into the
    studio's Ready-to-stored time, which BFL's real service does not. Each image is drawn
    halfway through its task's run, not when the task is accepted: BFL draws on its own
    machines, and a burst of submissions (a batch filling the cap) should not find the
    emulator drawing on the studio's cores at the same moment. A download that comes before
    the image is drawn (a test that advances the emulator's clock) draws it at once.
    """

    def __init__(self, keep: int = 256) -> None:
        # `keep`: images held for download, newest first; more than a cap of 100 has running.
        self._keep = keep
        self._changed = threading.Condition()
        self._renders: OrderedDict[str, tuple[Task, Future[bytes]]] = OrderedDict()
        self._due: list[tuple[float, int, str]] = []  # (time.monotonic() to draw, order, task id)
        self._order = itertools.count()
        threading.Thread(target=self._run, name="emulator-render", daemon=True).start()

    def schedule(self, task: Task) -> None:
        if task.outcome != "ready":
            return
        draw_at = time.monotonic() + max(0.0, task.ready_at - task.created_at) / 2
        with self._changed:
            self._renders[task.id] = (task, Future())
            while len(self._renders) > self._keep:
                self._renders.popitem(last=False)  # a late download draws it itself
            heapq.heappush(self._due, (draw_at, next(self._order), task.id))
            self._changed.notify()

    def image(self, task: Task) -> bytes:
        with self._changed:
            entry = self._renders.get(task.id)
            mine = entry is not None and self._take(entry[1])
        if entry is None:
            return _draw(task)
        if mine:
            _draw_into(*entry)
        return entry[1].result()

    @staticmethod
    def _take(future: Future[bytes]) -> bool:
        """Whether the caller draws this image: nobody has started it. Hold `_changed`."""
        return not (future.running() or future.done()) and future.set_running_or_notify_cancel()

    def _run(self) -> None:
        # Load the fonts and codecs now (a small image, thrown away), not in the first tasks.
        render_image("warm-up", 0, "warm-up", 64, 64, "jpeg")
        while True:
            with self._changed:
                while not self._due or self._due[0][0] > time.monotonic():
                    wait = self._due[0][0] - time.monotonic() if self._due else None
                    self._changed.wait(timeout=wait)
                _, _, task_id = heapq.heappop(self._due)
                entry = self._renders.get(task_id)  # None: dropped from those kept
                mine = entry is not None and self._take(entry[1])
            if entry is not None and mine:
                _draw_into(*entry)


def _draw_into(task: Task, future: Future[bytes]) -> None:
    try:
        future.set_result(_draw(task))
    except BaseException as exc:  # the downloader sees it, as a drawing error
        future.set_exception(exc)


def _draw(task: Task) -> bytes:
    return render_image(
        task.prompt, task.seed, task.model, task.width, task.height, task.output_format
    )


class EmulatorService:
    """The emulated BFL account: tasks, credits, limits and the admin log."""

    def __init__(self, config: EmulatorConfig, *, clock: Callable[[], float] = time.time):
        self._initial_config = config
        self._config = config
        self._clock = clock
        self._offset = 0.0
        self._lock = threading.Lock()
        self._ledger = _Ledger()
        self._balance = config.credits
        self._rng = random.Random(config.random_seed)
        self._listeners: list[Callable[[Task], None]] = []
        self._images = _Prerenderer()
        self.on_task_created(self._images.schedule)

    # --- configuration -------------------------------------------------------------------

    @property
    def config(self) -> EmulatorConfig:
        return self._config

    def update_config(self, changes: dict[str, Any]) -> EmulatorConfig:
        """Apply a partial change; raises pydantic's ValidationError on bad values."""
        merged = {**self._config.model_dump(), **changes}
        new = EmulatorConfig(**merged)
        with self._lock:
            self._config = new
            if "credits" in changes:
                self._balance = new.credits
            if "random_seed" in changes:
                self._rng = random.Random(new.random_seed)
        return new

    def reset(self) -> None:
        """Forget every task and log entry; restore the starting config and balance."""
        with self._lock:
            self._config = self._initial_config
            self._ledger = _Ledger()
            self._balance = self._config.credits
            self._offset = 0.0
            self._rng = random.Random(self._config.random_seed)

    def on_task_created(self, listener: Callable[[Task], None]) -> None:
        self._listeners.append(listener)

    # --- time ----------------------------------------------------------------------------

    def now(self) -> float:
        return self._clock() + self._offset

    def advance_clock(self, seconds: float) -> float:
        """Jump the emulator's clock forward (expire links and tasks without sleeping)."""
        with self._lock:
            self._offset += max(0.0, seconds)
            return self._offset

    # --- BFL endpoints -------------------------------------------------------------------

    def check_available(self) -> None:
        """Answer 503 while the emulated service is down (`unavailable`)."""
        if self._config.unavailable:
            raise EmulatorRefusal(503, "Service Unavailable", headers={"Retry-After": "5"})

    def record_refusal(self, model: str, status_code: int) -> None:
        """Log a refused submission (the HTTP layer calls this for every refused POST)."""
        with self._lock:
            self._ledger.refusals.append(
                {"model": model, "status": status_code, "time": _iso(self.now())}
            )

    def refusals(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(r) for r in self._ledger.refusals]

    def check_key(self, key: str | None) -> None:
        if not key or not key.strip():
            raise EmulatorRefusal(401, "Not authenticated: send your API key in the x-key header")
        expected = self._config.api_key
        if expected and not hmac.compare_digest(key.encode(), expected.encode()):
            raise EmulatorRefusal(403, "Invalid API key")

    def submit(self, model: str, body: Any, *, base_url: str, polling_base: str) -> Accepted:
        """Validate and accept a task, or raise `EmulatorRefusal` as BFL would."""
        spec, payload = _checked_payload(model, body)
        config = self._config
        lowered = str(payload["prompt"]).lower()
        sizes = _reference_sizes(payload)
        estimate = catalogue.estimate_payload_cost(
            spec, payload, reference_sizes=sizes, credit_price_usd=config.credit_price_usd
        )

        with self._lock:
            if self._rng.random() < config.error_rate_5xx:
                raise EmulatorRefusal(500, "Internal Server Error")
            now = self.now()
            self._purge(now)
            self._enforce_caps(model, spec.active_task_cap, now)
            if estimate.credits > self._balance:
                raise EmulatorRefusal(
                    402,
                    f"Insufficient credits: this request costs {estimate.credits} credits, "
                    f"the balance is {self._balance}",
                )
            task = self._new_task(spec, payload, estimate.credits, now=now, base_url=base_url)
            self._balance -= estimate.credits
            limit_headers = self._store_task(task, now)
            drop = TRIGGER_DROP in lowered
            self._ledger.submissions.append(
                {
                    "id": task.id,
                    "model": model,
                    "payload": _loggable_payload(payload),
                    "time": _iso(now),
                    "cost": float(estimate.credits),
                    "dropped": drop,
                }
            )
        for listener in self._listeners:
            listener(task)
        answer = _accepted_body(spec, task, sizes, polling_base=polling_base)
        return Accepted(body=answer, task=task, drop=drop, headers=limit_headers)

    def _new_task(
        self,
        spec: catalogue.ModelSpec,
        payload: dict[str, Any],
        cost: Decimal,
        *,
        now: float,
        base_url: str,
    ) -> Task:
        """A task for an accepted payload: latency, outcome and seed drawn. Call under the lock.

        `cost` is in credits; `now` and the ready time are emulator-clock seconds.
        """
        config = self._config
        prompt = str(payload["prompt"])
        lowered = prompt.lower()
        width, height = catalogue.output_size(spec, payload)
        latency = self._rng.uniform(
            max(0.0, config.latency_mean_s - config.latency_jitter_s),
            config.latency_mean_s + config.latency_jitter_s,
        )
        if TRIGGER_SLOW in lowered:
            latency *= config.slow_factor
        outcome: Outcome = "ready"
        for word, result in TRIGGER_OUTCOMES.items():
            if word in lowered:
                outcome = result
                break
        seed = payload["seed"] if "seed" in payload else self._rng.randint(0, 2**32 - 1)
        return Task(
            id=secrets.token_hex(16),
            model=spec.name,
            prompt=prompt,
            seed=int(seed),
            width=width,
            height=height,
            output_format=str(payload.get("output_format", "jpeg")),
            cost=cost,
            created_at=now,
            ready_at=now + latency,
            outcome=outcome,
            delivery_token=secrets.token_urlsafe(24),
            base_url=base_url,
            webhook_url=payload.get("webhook_url"),
            webhook_secret=payload.get("webhook_secret"),
        )

    def _store_task(self, task: Task, now: float) -> dict[str, str]:
        """Keep a new task, update the peak active count; return rate-limit headers. Under lock."""
        self._ledger.tasks[task.id] = task
        active_now = sum(1 for t in self._ledger.tasks.values() if t.is_active(now))
        self._ledger.peak_active = max(self._ledger.peak_active, active_now)
        limit_headers = self._rate_limit_headers(now)
        self._ledger.tokens[task.delivery_token] = task.id
        return limit_headers

    def get_result(self, task_id: str, *, delivery_base: str) -> dict[str, Any]:
        """The `get_result` answer for a task id."""
        with self._lock:
            if self._rng.random() < self._config.poll_error_rate_5xx:
                raise EmulatorRefusal(503, "Service Unavailable")
            now = self.now()
            self._purge(now)
            task = self._ledger.tasks.get(task_id)
        if task is None or task.outcome == "not_found":
            return {"id": task_id, "status": "Task not found"}
        return self.task_view(task, now, delivery_base)

    def task_view(self, task: Task, now: float, delivery_base: str) -> dict[str, Any]:
        """The JSON BFL reports for `task` at time `now`."""
        if task.is_active(now):
            span = task.ready_at - task.created_at
            progress = min(0.99, (now - task.created_at) / span) if span > 0 else 0.0
            return {
                "id": task.id,
                "status": "Pending",
                "result": None,
                "progress": round(progress, 2),
                "details": None,
            }
        view: dict[str, Any] = {
            "id": task.id,
            "status": _STATUS_TEXT[task.outcome],
            "result": None,
            "progress": None,
            "details": None,
        }
        if task.outcome == "ready":
            view["result"] = {
                "sample": f"{delivery_base}/delivery/{task.delivery_token}.{task.extension}",
                "prompt": task.prompt,
                "seed": task.seed,
                "start_time": task.created_at,
                "end_time": task.ready_at,
                "duration": round(task.ready_at - task.created_at, 3),
            }
        elif task.outcome in ("request_moderated", "content_moderated"):
            # BFL names the filters that stopped the task under this key.
            view["details"] = {"Moderation Reasons": list(self._config.moderation_reasons)}
        elif task.outcome == "error":
            view["details"] = {"error": "Emulated generation failure (trigger word)"}
        return view

    def final_view(self, task_id: str) -> dict[str, Any] | None:
        """The finished task's result for a webhook, or None if it is gone or not finished."""
        with self._lock:
            task = self._ledger.tasks.get(task_id)
            now = self.now()
        if task is None or task.is_active(now) or task.outcome == "not_found":
            return None
        return self.task_view(task, now, task.base_url)

    def delivery(self, name: str, *, x_key_present: bool) -> tuple[bytes, str]:
        """The image behind a result link: (bytes, content type)."""
        token, _, _ext = name.partition(".")
        with self._lock:
            now = self.now()
            task_id = self._ledger.tokens.get(token)
            task = self._ledger.tasks.get(task_id) if task_id else None
            if task is None or task.outcome != "ready" or task.is_active(now):
                status = 404
            elif now > task.ready_at + self._config.result_ttl_s:
                status = 403
            else:
                status = 200
            self._ledger.deliveries.append(
                {"token": token, "status": status, "x_key_present": x_key_present}
            )
            override = self._config.delivery_content_type
        if status == 404:
            raise EmulatorRefusal(404, "Not Found")
        if status == 403:
            raise EmulatorRefusal(403, "Request has expired")
        assert task is not None
        if override and not override.startswith("image/"):
            return b"<html><body>Not an image</body></html>", override
        return self._images.image(task), override or content_type_for(task.output_format)

    def task(self, task_id: str) -> Task | None:
        with self._lock:
            return self._ledger.tasks.get(task_id)

    def credits(self) -> Decimal:
        with self._lock:
            return self._balance

    # --- admin log -----------------------------------------------------------------------

    def submissions(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(s) for s in self._ledger.submissions]

    def deliveries(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(d) for d in self._ledger.deliveries]

    def webhook_log(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(w) for w in self._ledger.webhooks]

    def record_webhook(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self._ledger.webhooks.append(entry)

    def active_tasks(self) -> int:
        with self._lock:
            now = self.now()
            return sum(1 for t in self._ledger.tasks.values() if t.is_active(now))

    def peak_active_tasks(self) -> int:
        """The most tasks that were active at once since the start (or the last reset)."""
        with self._lock:
            return self._ledger.peak_active

    def account_cap_refusals(self) -> int:
        """How many POSTs the account's active-task cap refused with 429."""
        with self._lock:
            return self._ledger.account_cap_refusals

    # --- internals (call with the lock held) ---------------------------------------------

    def _purge(self, now: float) -> None:
        ttl = self._config.task_ttl_s
        gone = [t.id for t in self._ledger.tasks.values() if now > t.ready_at + ttl]
        for task_id in gone:
            task = self._ledger.tasks.pop(task_id)
            self._ledger.tokens.pop(task.delivery_token, None)

    def _enforce_caps(self, model: str, catalogue_cap: int | None, now: float) -> None:
        active = [t for t in self._ledger.tasks.values() if t.is_active(now)]
        caps: list[tuple[list[Task], int, str]] = [
            (active, self._config.account_active_task_cap, "account")
        ]
        model_cap = self._config.model_task_caps.get(model, catalogue_cap)
        if model_cap is not None:
            caps.append(([t for t in active if t.model == model], model_cap, model))
        for tasks, cap, scope in caps:
            if len(tasks) >= cap:
                if scope == "account":
                    self._ledger.account_cap_refusals += 1
                earliest = min(t.ready_at for t in tasks) - now if tasks else 1.0
                config = self._config
                chosen = earliest if config.retry_after_s is None else config.retry_after_s
                wait = max(1, math.ceil(chosen))
                message = (
                    f"Too many active tasks for {scope} (limit {cap}); "
                    "wait for one to finish and try again"
                )
                headers = self._rate_limit_headers(now)
                if config.retry_after_format == "seconds":
                    headers["Retry-After"] = str(wait)
                elif config.retry_after_format == "http-date":
                    when = datetime.now(UTC) + timedelta(seconds=wait)
                    headers["Retry-After"] = email.utils.format_datetime(when, usegmt=True)
                body = None
                if config.rate_limit_body == "error":
                    body = {"error": "rate_limit_exceeded", "message": message, "retry_after": wait}
                raise EmulatorRefusal(429, message, headers=headers, body=body)

    def _rate_limit_headers(self, now: float) -> dict[str, str]:
        """X-RateLimit-* for the account (when configured): its cap, what is left, and seconds
        until the earliest active task ends."""
        if not self._config.rate_limit_headers:
            return {}
        active = [t for t in self._ledger.tasks.values() if t.is_active(now)]
        cap = self._config.account_active_task_cap
        reset = min((t.ready_at for t in active), default=now) - now
        return {
            "X-RateLimit-Limit": str(cap),
            "X-RateLimit-Remaining": str(max(0, cap - len(active))),
            "X-RateLimit-Reset": str(max(0, math.ceil(reset))),
        }
