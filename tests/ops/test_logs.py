"""Structured logs: JSON off a terminal, secrets redacted, a request id on every line."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator

import pytest
import structlog

from app.ops.logs import REDACTED, configure_logging, get_logger
from app.settings import get_settings
from tests.ops.conftest import ClientFactory

BFL_KEY = "bfl-key-4f0c9a1e7d2b"
S3_SECRET = "s3-secret-93b1c7aa"
METRICS_TOKEN = "metrics-token-5e2d11"


class Captured:
    def __init__(self, stream: io.StringIO) -> None:
        self.stream = stream

    @property
    def text(self) -> str:
        return self.stream.getvalue()

    def lines(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.text.splitlines() if line.strip()]


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> Iterator[Captured]:
    """Every process log line of the test, as the web or worker process would write it."""
    monkeypatch.setenv("BFL_API_KEY", BFL_KEY)
    monkeypatch.setenv("S3_SECRET_ACCESS_KEY", S3_SECRET)
    monkeypatch.setenv("METRICS_TOKEN", METRICS_TOKEN)
    monkeypatch.setenv("LOG_FORMAT", "auto")
    get_settings.cache_clear()
    stream = io.StringIO()  # not a terminal: auto means JSON
    configure_logging("test", force=True, stream=stream)
    try:
        yield Captured(stream)
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
        configure_logging("test", force=True)


def test_lines_are_json_with_level_time_logger_and_context(captured: Captured) -> None:
    structlog.contextvars.bind_contextvars(job_id="job-123")
    try:
        get_logger("app.test").info("job claimed", model="flux-2-pro")
        logging.getLogger("celery.worker").warning("a %s from the standard library", "line")
    finally:
        structlog.contextvars.clear_contextvars()

    first, second = captured.lines()
    assert first["event"] == "job claimed"
    assert first["level"] == "info"
    assert first["model"] == "flux-2-pro"
    assert first["job_id"] == "job-123"
    assert first["process"] == "test"
    assert "timestamp" in first
    assert second["event"] == "a line from the standard library"
    assert second["logger"] == "celery.worker"
    assert second["job_id"] == "job-123"


def test_console_format_is_plain_text(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOG_FORMAT", "console")
    get_settings.cache_clear()
    stream = io.StringIO()
    try:
        configure_logging("test", force=True, stream=stream)
        get_logger("app.test").info("readable line", n=1)
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
        configure_logging("test", force=True)
    text = stream.getvalue()
    assert "readable line" in text
    assert not text.lstrip().startswith("{")


def test_secrets_never_reach_a_line(captured: Captured) -> None:
    secret_key = get_settings().SECRET_KEY.get_secret_value()
    cookie = "Zq3xS9v0c2W1e8R7t6Y5u4I3o2P1a0S9"
    api_token = "fts_AbCdEfGhIjKlMnOpQrStUvWxYz012345"
    stdlib = logging.getLogger("app.bfl.client")
    stdlib.info("calling BFL with key %s", BFL_KEY)
    stdlib.warning(
        "echoed headers",
        extra={"headers": {"x-key": BFL_KEY, "Authorization": f"Bearer {api_token}"}},
    )
    get_logger("app.test").info(
        "request",
        cookie_header=f"__Host-studio_session={cookie}; theme=dark",
        raw=f"x-key: {BFL_KEY}",
        nested={"list": [f"signed with {secret_key}", {"password": "hunter2hunter2"}]},
        s3=f"secret={S3_SECRET}",
        scrape=f"Authorization: Bearer {METRICS_TOKEN}",
    )
    try:
        raise RuntimeError(f"boom with {BFL_KEY} and {secret_key}")
    except RuntimeError:
        stdlib.exception("a failure")

    text = captured.text
    for secret in (BFL_KEY, secret_key, cookie, api_token, S3_SECRET, METRICS_TOKEN, "hunter2"):
        assert secret not in text, f"{secret!r} leaked into the logs"
    assert text.count(REDACTED) >= 8
    lines = captured.lines()
    assert len(lines) == 4
    assert "theme=dark" in text  # only the credential goes, not the whole value
    assert "RuntimeError" in text  # the traceback is kept, scrubbed


def test_request_id_is_echoed_and_on_the_request_line(
    captured: Captured, client_factory: ClientFactory
) -> None:
    client = client_factory()
    given = client.get("/healthz", headers={"X-Request-ID": "trace-abc.123"})
    assert given.headers["x-request-id"] == "trace-abc.123"

    made = client.get("/login")
    other = client.get("/login")
    made_id = made.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", made_id)
    assert other.headers["x-request-id"] != made_id

    forged = client.get("/login", headers={"X-Request-ID": 'x" "level": "critical'})
    assert forged.headers["x-request-id"] != 'x" "level": "critical'
    assert re.fullmatch(r"[0-9a-f]{32}", forged.headers["x-request-id"])

    requests = [line for line in captured.lines() if line.get("event") == "request"]
    assert {"request_id": made_id, "path": "/login", "status": 200}.items() <= {
        k: requests[0].get(k) for k in ("request_id", "path", "status")
    }.items()
    assert all(line.get("request_id") for line in requests)


def test_request_lines_name_the_route_template(
    captured: Captured, client_factory: ClientFactory
) -> None:
    client = client_factory()
    client.get("/api/v1/jobs/00000000-0000-0000-0000-000000000000")

    (line,) = [r for r in captured.lines() if r.get("event") == "request"]
    assert line["route"] == "/api/v1/jobs/{job_id}"
    assert line["status"] == 401


def test_link_tokens_and_token_like_query_parameters_are_redacted(
    captured: Captured, client_factory: ClientFactory
) -> None:
    client = client_factory()
    invite = "Inv1teT0kenAbcdefghijklmnopqrstuvwxyz012345"
    hook = "a" * 64
    client.get(f"/invite/{invite}?token={invite}&page=2")
    client.post(f"/bfl/webhook/00000000-0000-0000-0000-000000000000/{hook}")
    get_logger("app.test").info("built", url=f"https://studio.example/invite/{invite}")

    text = captured.text
    assert invite not in text and hook not in text
    requests = [r for r in captured.lines() if r.get("event") == "request"]
    assert requests[0]["path"] == "/invite/[redacted]"
    assert requests[0]["query"] == "token=[redacted]&page=2"
    assert requests[1]["path"] == "/bfl/webhook/00000000-0000-0000-0000-000000000000/[redacted]"
    assert "https://studio.example/invite/[redacted]" in text
