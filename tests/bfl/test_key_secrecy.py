"""The BFL API key never shows up in an error, a repr or a log line (DESIGN invariant 8)."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable

import httpx
import pytest

from app.bfl.client import BFLClient, PollResult, Submission
from app.bfl.errors import BFLError
from app.emulator import EmulatorServer
from tests.bfl.conftest import API_KEY


def _all_text(error: BaseException) -> str:
    """Everything a log handler or an error page could print about an exception."""
    parts = [str(error), repr(error), "".join(traceback.format_exception(error))]
    cause = error.__cause__
    while cause is not None:
        parts += [str(cause), repr(cause)]
        cause = cause.__cause__
    return "\n".join(parts)


def test_key_is_absent_from_errors_reprs_and_logs(
    emulator: EmulatorServer,
    client: BFLClient,
    closed_port: int,
    wait_done: Callable[[Submission], PollResult],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    errors: list[BaseException] = []

    def collect(call: Callable[[], object]) -> None:
        try:
            call()
        except BFLError as exc:
            errors.append(exc)

    ready = wait_done(client.submit("flux-2-pro", {"prompt": "fine"}))
    assert ready.sample_url is not None
    client.fetch_image(ready.sample_url)
    collect(lambda: client.submit("flux-2-pro", {"prompt": "x", "width": 3}))
    collect(lambda: client.submit("flux-2-pro", {"prompt": "x [[drop]]"}))
    emulator.configure(account_active_task_cap=1, latency_mean_s=30)
    collect(lambda: client.submit("flux-2-pro", {"prompt": "one"}))
    collect(lambda: client.submit("flux-2-pro", {"prompt": "two"}))
    emulator.configure(api_key="another-key-entirely-123456")
    collect(lambda: client.credits())
    emulator.configure(credits=0, api_key=None, account_active_task_cap=24)
    collect(lambda: client.submit("flux-2-pro", {"prompt": "x"}))
    with BFLClient(f"http://127.0.0.1:{closed_port}", API_KEY, allow_insecure_urls=True) as dead:
        collect(lambda: dead.submit("flux-2-pro", {"prompt": "x"}))
        assert API_KEY not in repr(dead)

    codes = {getattr(e, "code", "") for e in errors}
    assert {
        "bfl_rejected",
        "submission_unknown",
        "bfl_rate_limited",
        "bfl_auth",
        "bfl_no_credits",
        "bfl_not_sent",
    } <= codes
    for error in errors:
        assert API_KEY not in _all_text(error)
    assert API_KEY not in repr(client)
    assert caplog.records, "the client should log its calls"
    for record in caplog.records:
        assert API_KEY not in record.getMessage()
        assert API_KEY not in str(record.__dict__)


def test_key_echoed_by_a_server_is_redacted() -> None:
    def echo(request: httpx.Request) -> httpx.Response:
        key = request.headers["x-key"]
        if request.url.path == "/v1/credits":
            return httpx.Response(403, json={"detail": f"key {key} is revoked"})
        body = {"detail": [{"loc": ["body", "prompt"], "msg": f"bad for {key}", "type": "x"}]}
        return httpx.Response(422, json=body)

    with BFLClient(
        "https://api.example.test", API_KEY, transport=httpx.MockTransport(echo)
    ) as client:
        for call in (client.credits, lambda: client.submit("flux-2-pro", {"prompt": "x"})):
            with pytest.raises(BFLError) as caught:
                call()
            assert API_KEY not in _all_text(caught.value)
            assert "[redacted]" in caught.value.message
