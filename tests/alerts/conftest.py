"""Real receivers for alerts: an SMTP server (aiosmtpd) and an HTTP server for the webhook,
each on a free port of this host, and the settings that point the studio at them."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from app.settings import get_settings

WEBHOOK_SECRET = "whsec-test-7f3a"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Mailbox:
    """Every message the SMTP server accepted, parsed, with its envelope recipients."""

    messages: list[Message] = field(default_factory=list)
    recipients: list[list[str]] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(message_from_bytes(envelope.original_content))
        self.recipients.append(list(envelope.rcpt_tos))
        return "250 OK"


@pytest.fixture
def mailbox(monkeypatch: pytest.MonkeyPatch) -> Iterator[Mailbox]:
    box = Mailbox()
    port = _free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    monkeypatch.setenv("SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("SMTP_PORT", str(port))
    monkeypatch.setenv("SMTP_TLS", "none")
    monkeypatch.setenv("SMTP_FROM", "alerts@studio.test")
    get_settings.cache_clear()
    try:
        yield box
    finally:
        controller.stop()
        get_settings.cache_clear()


@dataclass
class Hook:
    """Every POST the webhook server received: headers and raw body."""

    calls: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    status: int = 200

    def json(self, index: int = -1) -> Any:
        return json.loads(self.calls[index][1])


@pytest.fixture
def webhook(monkeypatch: pytest.MonkeyPatch) -> Iterator[Hook]:
    hook = Hook()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            hook.calls.append(({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(hook.status)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("ALERT_WEBHOOK_URL", f"http://127.0.0.1:{server.server_port}/hook")
    monkeypatch.setenv("ALERT_WEBHOOK_SECRET", WEBHOOK_SECRET)
    get_settings.cache_clear()
    try:
        yield hook
    finally:
        server.shutdown()
        server.server_close()
        get_settings.cache_clear()
