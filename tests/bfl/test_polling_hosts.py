"""The API key goes only to BFL's hosts: a polling_url on any other host is not followed."""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from app.bfl.catalogue import validate_request
from app.bfl.client import BFLClient, Submission, TaskStatus, host_allowed
from app.emulator import EmulatorServer
from app.settings import Settings
from tests.bfl.conftest import API_KEY


class RecordingServer:
    """A local HTTP server standing in for hosts that are not the emulator.

    It answers every GET as a finished task with its own image link, so a client that followed
    a polling URL here would come back Ready: the emulator's tasks in these tests are still
    Pending. Used directly (as `localhost`) and as an HTTP proxy, which lets any host name
    (`eu.api.bfl.ai`, `evilbfl.ai`) reach it without DNS.
    """

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        seen = self.seen

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                seen.append(
                    {
                        "target": self.path,
                        "host": self.headers.get("host"),
                        "x_key": self.headers.get("x-key"),
                    }
                )
                body = json.dumps(
                    {"status": "Ready", "result": {"sample": "http://localhost/stolen.png"}}
                ).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> RecordingServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def other_host() -> Iterator[RecordingServer]:
    with RecordingServer() as server:
        yield server


@pytest.fixture
def slow_emulator(emulator: EmulatorServer) -> EmulatorServer:
    emulator.configure(latency_mean_s=30, latency_jitter_s=0)
    return emulator


def _submit(client: BFLClient) -> Submission:
    return client.submit("flux-2-pro", validate_request("flux-2-pro", {"prompt": "a fox"}))


def _client(emulator: EmulatorServer, **kwargs: Any) -> BFLClient:
    return BFLClient(
        emulator.base_url, API_KEY, allow_insecure_urls=True, timeout=httpx.Timeout(5.0), **kwargs
    )


def test_polling_url_on_another_host_is_not_contacted_and_the_api_host_is_polled(
    slow_emulator: EmulatorServer,
    other_host: RecordingServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Default allowed hosts: bfl.ai and the API host (127.0.0.1 here); `localhost` is another
    # host name, as far as the key is concerned.
    with _client(slow_emulator) as client:
        submission = _submit(client)
        evil = f"http://localhost:{other_host.port}/v1/get_result?id={submission.id}"
        with caplog.at_level(logging.WARNING, logger="app.bfl.client"):
            result = client.poll(evil, submission.id)
        # The emulator's own answer (Pending), fetched from the API host's get_result.
        assert result.status is TaskStatus.PENDING
        # The emulator's regional polling URL (localhost) is refused the same way.
        assert submission.polling_url is not None
        assert submission.polling_url.startswith("http://localhost:")
        assert client.poll(submission.polling_url, submission.id).status is TaskStatus.PENDING
    assert other_host.seen == []
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("allowed BFL host" in w and f"localhost:{other_host.port}" in w for w in warnings)
    assert all(API_KEY not in w for w in warnings)


def test_an_allowed_polling_host_is_followed(
    slow_emulator: EmulatorServer, other_host: RecordingServer
) -> None:
    with _client(slow_emulator, allowed_hosts=["localhost"]) as client:
        submission = _submit(client)
        url = f"http://localhost:{other_host.port}/v1/get_result?id={submission.id}"
        assert client.poll(url, submission.id).status is TaskStatus.READY
    assert [s["x_key"] for s in other_host.seen] == [API_KEY]


@pytest.fixture
def via_proxy(other_host: RecordingServer, monkeypatch: pytest.MonkeyPatch) -> RecordingServer:
    """Send plain-http requests for any host but loopback through the recording server."""
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{other_host.port}")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    return other_host


@pytest.mark.parametrize("host", ["api.bfl.ai", "eu.api.bfl.ai", "bfl.ai", "API.BFL.AI."])
def test_bfl_ai_and_its_subdomains_receive_the_key(
    slow_emulator: EmulatorServer, via_proxy: RecordingServer, host: str
) -> None:
    with _client(slow_emulator) as client:
        submission = _submit(client)
        url = f"http://{host}/v1/get_result?id={submission.id}"
        assert client.poll(url, submission.id).status is TaskStatus.READY
    assert len(via_proxy.seen) == 1
    assert via_proxy.seen[0]["host"].lower().rstrip(".") == host.lower().rstrip(".")
    assert via_proxy.seen[0]["x_key"] == API_KEY


@pytest.mark.parametrize(
    "url",
    [
        "http://bfl.ai.evil.test/v1/get_result",
        "http://evilbfl.ai/v1/get_result",
        "http://api.bfl.ai.evil.test/v1/get_result",
        "http://evil.test/v1/get_result",
        "http://api.bfl.ai@evil.test/v1/get_result",
        "http://evil.test/api.bfl.ai/v1/get_result",
    ],
)
def test_look_alike_hosts_are_refused(
    slow_emulator: EmulatorServer, via_proxy: RecordingServer, url: str
) -> None:
    with _client(slow_emulator) as client:
        submission = _submit(client)
        result = client.poll(f"{url}?id={submission.id}", submission.id)
    assert result.status is TaskStatus.PENDING  # the emulator's answer, from the API host
    assert via_proxy.seen == []


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("api.bfl.ai", True),
        ("eu.api.bfl.ai", True),
        ("bfl.ai", True),
        ("BFL.ai.", True),
        ("evilbfl.ai", False),
        ("bfl.ai.evil.test", False),
        ("ai", False),
        ("", False),
    ],
)
def test_host_allowed_matches_whole_labels(host: str, allowed: bool) -> None:
    assert host_allowed(host, ["bfl.ai"]) is allowed


def test_allowed_hosts_setting_adds_the_api_host_and_refuses_urls() -> None:
    settings = Settings(BFL_ALLOWED_HOSTS="bfl.ai, Regional.Example", BFL_API_URL="https://x.test")
    assert settings.bfl_allowed_hosts == ["bfl.ai", "regional.example", "x.test"]
    with pytest.raises(ValueError, match=re.escape("BFL_ALLOWED_HOSTS entry 'https://evil.test'")):
        Settings(BFL_ALLOWED_HOSTS="bfl.ai,https://evil.test")
