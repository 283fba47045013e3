"""Sign-in throttling per account and per client address: growing delays, never a lock-out."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app.auth.throttle import ThrottlePolicy
from app.settings import get_settings
from tests.auth.support import csrf_from
from tests.factories import PASSWORD, make_person

DELAY_S = 0.3


@pytest.fixture
def quick_throttle(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Few free attempts and a short first delay, so recovery takes a fraction of a second."""
    monkeypatch.setenv("LOGIN_FREE_ATTEMPTS_ACCOUNT", "3")
    monkeypatch.setenv("LOGIN_FREE_ATTEMPTS_ADDRESS", "6")
    monkeypatch.setenv("LOGIN_DELAY_BASE_S", str(DELAY_S))
    get_settings.cache_clear()
    yield
    monkeypatch.undo()
    get_settings.cache_clear()


def _attempt(client: TestClient, email: str, password: str):
    token = csrf_from(client.get("/login").text)
    return client.post(
        "/login",
        data={"email": email, "password": password, "csrf_token": token},
        follow_redirects=False,
    )


def test_one_account_is_slowed_down_whatever_address_the_guesses_come_from(
    db: Session, client_factory: Callable[..., TestClient], quick_throttle: None
) -> None:
    person = make_person(db)
    email = person.user.email
    for _ in range(3):
        assert _attempt(client_factory(), email, "a wrong guess").status_code == 400
    refused = _attempt(client_factory(), email, "a wrong guess")
    assert refused.status_code == 429
    assert "Too many sign-in attempts; try again in 1 second" in refused.text
    assert refused.headers["retry-after"] == "1"
    # While the delay runs even the right password is refused, from anywhere...
    owner = client_factory()
    blocked = _attempt(owner, email, PASSWORD)
    assert blocked.status_code == 429
    assert "try again in" in blocked.text
    # ...and once it is over the owner gets in: no hard lock-out.
    time.sleep(DELAY_S + 0.1)
    assert _attempt(owner, email, PASSWORD).status_code == 303


def test_other_accounts_are_not_slowed_by_guesses_at_one(
    db: Session, client_factory: Callable[..., TestClient], quick_throttle: None
) -> None:
    target, bystander = make_person(db), make_person(db)
    for _ in range(4):
        _attempt(client_factory(), target.user.email, "a wrong guess")
    assert _attempt(client_factory(), bystander.user.email, PASSWORD).status_code == 303


def test_one_address_guessing_many_accounts_is_slowed_down(
    db: Session, client_factory: Callable[..., TestClient], quick_throttle: None
) -> None:
    person = make_person(db)
    sprayer = client_factory("203.0.113.7")
    for n in range(6):
        answer = _attempt(sprayer, f"someone{n}@example.com", "Winter2026!")
        assert answer.status_code == 400
    assert _attempt(sprayer, "someone-else@example.com", "Winter2026!").status_code == 429
    # The address is refused even for a real account with the right password...
    assert _attempt(sprayer, person.user.email, PASSWORD).status_code == 429
    # ...while the same account signs in fine from elsewhere.
    assert _attempt(client_factory("203.0.113.8"), person.user.email, PASSWORD).status_code == 303
    time.sleep(DELAY_S + 0.1)
    assert _attempt(sprayer, person.user.email, PASSWORD).status_code == 303


def test_a_successful_sign_in_clears_the_account_counter(
    db: Session, client_factory: Callable[..., TestClient], quick_throttle: None
) -> None:
    person = make_person(db)
    email = person.user.email
    for _ in range(3):
        _attempt(client_factory(), email, "a wrong guess")
    assert _attempt(client_factory(), email, PASSWORD).status_code == 303
    # Three more mistakes are free again.
    for _ in range(3):
        assert _attempt(client_factory(), email, "a wrong guess").status_code == 400


def test_delay_doubles_after_the_free_attempts_and_is_capped() -> None:
    policy = ThrottlePolicy(
        free_per_account=5, free_per_address=30, base_delay_s=2, max_delay_s=900
    )
    delays = [policy.delay_after(n, policy.free_per_account) for n in range(1, 15)]
    assert delays[:5] == [0, 0, 0, 0, 0]
    assert delays[5:10] == [2, 4, 8, 16, 32]
    assert delays[13] == 512
    assert policy.delay_after(10_000, 5) == 900


def test_ipv6_neighbours_in_one_slash_64_share_a_counter(
    db: Session, client_factory: Callable[..., TestClient], quick_throttle: None
) -> None:
    for n in range(7):
        _attempt(client_factory(f"2001:db8:1:2::{n + 1:x}"), f"nobody{n}@example.com", "guess")
    neighbour = client_factory("2001:db8:1:2::ff")
    assert _attempt(neighbour, "nobody@example.com", "guess").status_code == 429
    elsewhere = client_factory("2001:db8:1:3::1")
    assert _attempt(elsewhere, "nobody@example.com", "guess").status_code == 400
