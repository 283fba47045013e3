"""Per-token rate limits: 429 in the shared shape with Retry-After, one window per token."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from app.api.ratelimit import WINDOW_S, count_request
from app.settings import get_settings
from tests.api.conftest import MakeCaller, assert_error


@pytest.fixture
def limit_of_three(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    monkeypatch.setenv("API_RATE_LIMIT_PER_MINUTE", "3")
    get_settings.cache_clear()
    yield 3
    monkeypatch.undo()
    get_settings.cache_clear()


def _fresh_window() -> None:
    # Counting spans one fixed window; start well inside one so the test cannot straddle two.
    left = WINDOW_S - time.time() % WINDOW_S
    if left < 10:
        time.sleep(left + 0.1)


def test_the_request_past_the_limit_is_429_with_retry_after(
    client: TestClient, make_caller: MakeCaller, limit_of_three: int
) -> None:
    caller, other = make_caller(), make_caller()
    _fresh_window()
    for _ in range(limit_of_three):
        assert client.get("/api/v1/me", headers=caller.headers).status_code == 200
    refused = client.get("/api/v1/jobs", headers=caller.headers)
    error = assert_error(refused, 429, "rate_limited")
    assert "3 requests per minute" in str(error["message"])
    retry_after = int(refused.headers["Retry-After"])
    assert 1 <= retry_after <= WINDOW_S
    # Another token has its own allowance.
    assert client.get("/api/v1/me", headers=other.headers).status_code == 200


def test_count_request_windows_and_retry_after() -> None:
    subject = f"test:{uuid.uuid4()}"
    start = (time.time() // WINDOW_S + 5) * WINDOW_S  # a window no other test touches
    first = count_request(subject, 2, now=start + 1)
    second = count_request(subject, 2, now=start + 30)
    third = count_request(subject, 2, now=start + 50.5)
    assert first and second and third
    assert (first.allowed, second.allowed, third.allowed) == (True, True, False)
    assert third.retry_after == 10  # 9.5 s left, rounded up
    following = count_request(subject, 2, now=start + WINDOW_S)
    assert following and following.allowed and following.count == 1
