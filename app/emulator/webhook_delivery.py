"""Sends the emulator's webhook calls when tasks finish, from a background thread."""

from __future__ import annotations

import heapq
import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx

from app.bfl.webhooks import SIGNATURE_HEADER, compute_signature
from app.emulator.service import EmulatorService, Task

log = logging.getLogger(__name__)


class WebhookDispatcher:
    """Waits for tasks with a webhook_url to finish, then POSTs their result to it.

    One scheduler thread sleeps until the next task is due; a small pool makes the calls,
    so a slow receiver never delays the others or any request handler.
    """

    def __init__(self, service: EmulatorService, *, workers: int = 4) -> None:
        self._service = service
        self._due: list[tuple[float, str]] = []
        self._wake = threading.Condition()
        self._stopped = False
        self._thread: threading.Thread | None = None
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="emulator-hook")
        # One pooled client for every call: building a client per webhook costs more CPU than
        # the call itself, which under load delays the very results the webhooks announce.
        self._client = httpx.Client(limits=httpx.Limits(max_connections=workers * 2))
        service.on_task_created(self.schedule)

    def schedule(self, task: Task) -> None:
        if not task.webhook_url or task.outcome == "not_found":
            return
        with self._wake:
            if self._stopped:
                return
            heapq.heappush(self._due, (task.ready_at, task.id))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="emulator-webhooks", daemon=True
                )
                self._thread.start()
            self._wake.notify()

    def poke(self) -> None:
        """Re-check due times now (after the emulator's clock jumped)."""
        with self._wake:
            self._wake.notify()

    def stop(self) -> None:
        with self._wake:
            self._stopped = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._stopped:
                    now = self._service.now()
                    if self._due and self._due[0][0] <= now:
                        break
                    timeout = (self._due[0][0] - now) if self._due else None
                    self._wake.wait(timeout=min(timeout, 1.0) if timeout is not None else 1.0)
                if self._stopped:
                    return
                _, task_id = heapq.heappop(self._due)
            self._pool.submit(self._deliver, task_id)

    def _deliver(self, task_id: str) -> None:
        task_view = self._service.final_view(task_id)
        task = self._service.task(task_id)
        if task_view is None or task is None or not task.webhook_url:
            return
        body = json.dumps(task_view, separators=(",", ":")).encode()
        headers = {"content-type": "application/json"}
        if task.webhook_secret:
            headers[SIGNATURE_HEADER] = compute_signature(body, task.webhook_secret)
        entry: dict[str, object] = {"id": task_id, "url": task.webhook_url, "status": None}
        try:
            response = self._client.post(
                task.webhook_url,
                content=body,
                headers=headers,
                timeout=self._service.config.webhook_timeout_s,
            )
            entry["status"] = response.status_code
        except httpx.HTTPError as exc:
            entry["error"] = type(exc).__name__
            log.warning("emulator webhook to %s failed: %s", task.webhook_url, exc)
        self._service.record_webhook(entry)
