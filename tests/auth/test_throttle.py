"""Sign-in throttling per account and per client address: growing delays, never a lock-out."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app.auth.throttle import ThrottlePolicy
from app.ops.proxies import resolve_client
from app.settings import Settings, get_settings, parse_networks
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


def test_guesses_at_one_account_slow_that_address_and_never_the_owner_elsewhere(
    db: Session, client_factory: Callable[..., TestClient], quick_throttle: None
) -> None:
    person = make_person(db)
    email = person.user.email
    guesser = client_factory("203.0.113.66")
    for _ in range(3):
        assert _attempt(guesser, email, "a wrong guess").status_code == 400
    refused = _attempt(guesser, email, "a wrong guess")
    assert refused.status_code == 429
    assert "Too many sign-in attempts; try again in 1 second" in refused.text
    assert refused.headers["retry-after"] == "1"
    # While the delay runs the guesser is refused even the right password...
    assert _attempt(guesser, email, PASSWORD).status_code == 429
    # ...but the owner, signing in from another address, is not kept out by a stranger.
    assert _attempt(client_factory("198.51.100.250"), email, PASSWORD).status_code == 303
    # Once the delay is over the guessing address may try again: no hard lock-out.
    time.sleep(DELAY_S + 0.1)
    assert _attempt(guesser, email, PASSWORD).status_code == 303


def test_a_stranger_who_knows_the_email_cannot_keep_its_owner_out(
    db: Session, client_factory: Callable[..., TestClient]
) -> None:
    # Default policy: 5 free failures per account and address, then one try per delay.
    person = make_person(db)
    stranger = client_factory("203.0.113.70")
    answers = [_attempt(stranger, person.user.email, "a wrong guess") for _ in range(7)]
    assert [a.status_code for a in answers[:5]] == [400] * 5
    assert all(a.status_code == 429 for a in answers[5:])
    assert (
        _attempt(client_factory("198.51.100.249"), person.user.email, PASSWORD).status_code == 303
    )


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


# --- Behind a reverse proxy ------------------------------------------------------------------

PROXY = "172.31.250.10"


@pytest.fixture
def behind_proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TRUSTED_PROXIES", f"{PROXY}, 10.9.0.0/16")
    get_settings.cache_clear()
    yield
    monkeypatch.undo()
    get_settings.cache_clear()


def _via_proxy(client: TestClient, forwarded_for: str, email: str, password: str):
    headers = {"X-Forwarded-For": forwarded_for}
    token = csrf_from(client.get("/login", headers=headers).text)
    return client.post(
        "/login",
        data={"email": email, "password": password, "csrf_token": token},
        headers=headers,
        follow_redirects=False,
    )


def test_one_client_behind_the_proxy_cannot_lock_everyone_out(
    db: Session, client_factory: Callable[..., TestClient], behind_proxy: None
) -> None:
    # Default policy: 30 free failures per address. Every request arrives from the proxy.
    person = make_person(db)
    proxy = client_factory(PROXY)
    for n in range(31):
        _via_proxy(proxy, f"192.0.2.{n + 1}", f"nobody{n}@example.com", "a wrong guess")
    # A person behind the same proxy, from their own address, signs in at once.
    assert _via_proxy(proxy, "198.51.100.77", person.user.email, PASSWORD).status_code == 303


def test_the_proxy_resolves_each_client_so_one_sprayer_is_slowed_alone(
    db: Session, client_factory: Callable[..., TestClient], behind_proxy: None
) -> None:
    person = make_person(db)
    proxy = client_factory(PROXY)
    answers = [
        # The sprayer invents a left-most hop each time; the proxy appends the real one.
        _via_proxy(proxy, f"10.{n}.0.1, 203.0.113.90", f"nobody{n}@example.com", "guess")
        for n in range(31)
    ]
    assert answers[-1].status_code == 429
    assert _via_proxy(proxy, "203.0.113.90", person.user.email, PASSWORD).status_code == 429
    # Chained trusted proxies (10.9.x) are skipped: the client is the hop before them.
    chained = _via_proxy(proxy, "203.0.113.91, 10.9.0.5", person.user.email, PASSWORD)
    assert chained.status_code == 303


def test_a_forwarded_for_header_from_an_untrusted_client_is_ignored(
    db: Session, client_factory: Callable[..., TestClient], behind_proxy: None
) -> None:
    person = make_person(db)
    direct = client_factory("203.0.113.99")
    for n in range(31):
        _via_proxy(direct, f"192.0.2.{n + 1}", f"nobody{n}@example.com", "a wrong guess")
    # Every spoofed address was counted against the real one, which is now slowed down.
    assert _via_proxy(direct, "192.0.2.200", person.user.email, PASSWORD).status_code == 429


def test_resolve_client_takes_the_right_most_untrusted_hop() -> None:
    proxies = parse_networks("172.31.250.10, 10.0.0.0/8, fd00::/8")
    assert resolve_client("172.31.250.10", "1.2.3.4, 198.51.100.1", proxies) == "198.51.100.1"
    assert resolve_client("172.31.250.10", "198.51.100.1, 10.1.2.3", proxies) == "198.51.100.1"
    assert resolve_client("203.0.113.1", "198.51.100.1", proxies) == "203.0.113.1"
    assert resolve_client("172.31.250.10", None, proxies) == "172.31.250.10"
    assert resolve_client("172.31.250.10", "not-an-ip", proxies) == "172.31.250.10"
    assert resolve_client("fd00::1", "2001:db8::5", proxies) == "2001:db8::5"
    assert resolve_client("172.31.250.10", "198.51.100.1", ()) == "172.31.250.10"


def test_trusted_proxies_that_are_not_addresses_are_refused_by_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TRUSTED_PROXIES", "10.0.0.0/8, proxy.local")
    with pytest.raises(ValueError, match=r"'proxy\.local' is not an address or CIDR"):
        Settings()
