"""The emulator calls webhook_url when a task finishes, signed when a secret was given."""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from app.bfl.webhooks import SIGNATURE_HEADER, verify_signature
from app.emulator import EmulatorServer

Received = tuple[dict[str, str], bytes]


@pytest.fixture
def receiver() -> Iterator[tuple[str, queue.Queue[Received]]]:
    """A tiny local HTTP server that records every POST it gets."""
    calls: queue.Queue[Received] = queue.Queue()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            calls.put(({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hooks/job-1", calls
    server.shutdown()
    server.server_close()


def test_signed_webhook_on_ready(
    http: httpx.Client, emulator: EmulatorServer, receiver: tuple[str, queue.Queue[Received]]
) -> None:
    url, calls = receiver
    task_id = http.post(
        "/v1/flux-2-pro",
        json={"prompt": "hooked", "webhook_url": url, "webhook_secret": "shared-secret"},
    ).json()["id"]
    headers, body = calls.get(timeout=5)
    assert verify_signature(body, headers[SIGNATURE_HEADER.lower()], "shared-secret")
    assert not verify_signature(body, headers[SIGNATURE_HEADER.lower()], "another-secret")
    payload = json.loads(body)
    assert payload["id"] == task_id and payload["status"] == "Ready"
    assert httpx.get(payload["result"]["sample"]).status_code == 200
    assert emulator.service.webhook_log()[0]["status"] == 204


def test_unsigned_webhook_on_failure(
    http: httpx.Client, receiver: tuple[str, queue.Queue[Received]]
) -> None:
    url, calls = receiver
    http.post("/v1/flux-2-pro", json={"prompt": "x [[error]]", "webhook_url": url})
    headers, body = calls.get(timeout=5)
    assert SIGNATURE_HEADER.lower() not in headers
    assert json.loads(body)["status"] == "Error"


def test_webhook_waits_for_the_task_to_finish(
    http: httpx.Client, emulator: EmulatorServer, receiver: tuple[str, queue.Queue[Received]]
) -> None:
    url, calls = receiver
    emulator.configure(latency_mean_s=60)
    http.post("/v1/flux-2-pro", json={"prompt": "later", "webhook_url": url})
    with pytest.raises(queue.Empty):
        calls.get(timeout=0.3)
    emulator.service.advance_clock(61)
    emulator.app.state.webhooks.poke()
    assert json.loads(calls.get(timeout=5)[1])["status"] == "Ready"
