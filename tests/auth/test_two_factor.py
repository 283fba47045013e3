"""Two-factor sign-in over HTTP: setup, the code step, replays, throttling, recovery codes,
the team policy for managers and admins, and an admin's reset."""

from __future__ import annotations

import html
import re
import time
from collections.abc import Callable, Iterator

import httpx
import pyotp
import pytest
import segno
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.auth.models import RecoveryCode, Role, Team, User
from app.auth.tokens import issue_token
from app.auth.two_factor import begin_setup
from app.settings import get_settings
from tests.auth.support import csrf_from, login
from tests.factories import PASSWORD, Person, make_person, make_team

COOKIE = "__Host-studio_session"
DELAY_S = 2.0
_SECRET = re.compile(r'data-secret="([A-Z2-7]+)"')
_RECOVERY = re.compile(r"<li><code>([a-z2-7-]+)</code></li>")


def code(secret: str, steps_ahead: int = 0) -> str:
    """The authenticator's code `steps_ahead` 30-second steps from now (the studio accepts
    one step either side). Codes asked for later in a test always lie in later steps, so a
    test never waits for the clock: each accepted step is newer than the last."""
    return pyotp.TOTP(secret).at(time.time() + 30 * steps_ahead)


def post_form(client: TestClient, page: str, path: str, data: dict[str, str]) -> httpx.Response:
    """Load `page` for its anti-forgery token, then post `data` to `path`."""
    token = csrf_from(client.get(page).text)
    return client.post(path, data={**data, "csrf_token": token}, follow_redirects=False)


def enable_two_factor(client: TestClient) -> tuple[str, list[str]]:
    """Turn TOTP on from the account pages as a person would; returns the secret the page
    showed and the recovery codes it showed once."""
    setup = post_form(client, "/account/two-factor", "/account/two-factor/setup", {})
    assert setup.status_code == 200, setup.text[:300]
    found = _SECRET.search(setup.text)
    assert found, "the setup page shows no key"
    secret = found.group(1)
    assert "<svg" in setup.text and "otpauth" not in setup.text.split("<svg", 1)[0][-200:]
    confirmed = client.post(
        "/account/two-factor/confirm",
        data={"code": code(secret, -1), "csrf_token": csrf_from(setup.text)},
        follow_redirects=False,
    )
    assert confirmed.status_code == 201, confirmed.text[:300]
    codes = _RECOVERY.findall(confirmed.text)
    assert len(codes) == 10 and len(set(codes)) == 10
    return secret, codes


def password_step(client: TestClient, email: str, next_path: str = "/") -> httpx.Response:
    page = client.get("/login")
    return client.post(
        "/login",
        data={
            "email": email,
            "password": PASSWORD,
            "next": next_path,
            "csrf_token": csrf_from(page.text),
        },
        follow_redirects=False,
    )


def code_step(client: TestClient, typed: str) -> httpx.Response:
    page = client.get("/login/code")
    assert page.status_code == 200, page.text[:200]
    return client.post(
        "/login/code",
        data={"code": typed, "csrf_token": csrf_from(page.text), "next": "/gallery"},
        follow_redirects=False,
    )


def error_of(response: httpx.Response) -> str:
    found = re.search(r'class="auth-error"[^>]*>([^<]*)<', response.text)
    return html.unescape(found.group(1)) if found else ""


@pytest.fixture
def quick_throttle(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("LOGIN_FREE_ATTEMPTS_ACCOUNT", "3")
    monkeypatch.setenv("LOGIN_FREE_ATTEMPTS_ADDRESS", "20")
    monkeypatch.setenv("LOGIN_DELAY_BASE_S", str(DELAY_S))
    get_settings.cache_clear()
    yield
    monkeypatch.undo()
    get_settings.cache_clear()


@pytest.fixture
def person_with_totp(
    db: Session, client_factory: Callable[..., TestClient]
) -> tuple[Person, str, list[str]]:
    person = make_person(db)
    client = client_factory()
    login(client, person.user.email, PASSWORD)
    secret, codes = enable_two_factor(client)
    return person, secret, codes


def test_setup_shows_a_qr_code_and_the_key_once_and_stores_the_secret_encrypted(
    db: Session, client_factory: Callable[..., TestClient]
) -> None:
    person = make_person(db)
    client = client_factory()
    login(client, person.user.email, PASSWORD)
    assert "Off." in client.get("/account").text
    setup = post_form(client, "/account/two-factor", "/account/two-factor/setup", {})
    secret = _SECRET.findall(setup.text)[0]
    # A wrong code keeps the setup open (same key) and says what to do.
    wrong = client.post(
        "/account/two-factor/confirm",
        data={
            "code": "000000" if code(secret) != "000000" else "111111",
            "csrf_token": csrf_from(setup.text),
        },
        follow_redirects=False,
    )
    assert wrong.status_code == 400
    assert "newest code" in error_of(wrong)
    assert _SECRET.findall(wrong.text) == [secret]
    confirmed = client.post(
        "/account/two-factor/confirm",
        data={"code": code(secret), "csrf_token": csrf_from(setup.text)},
        follow_redirects=False,
    )
    assert confirmed.status_code == 201
    assert "shown only now" in confirmed.text
    # From now on the key is never shown again, and the database holds it only encrypted.
    later = client.get("/account/two-factor")
    assert secret not in later.text and "data-secret" not in later.text
    assert "10 unused recovery codes" in later.text
    db.expire_all()
    user = db.get(User, person.user.id)
    assert user is not None and user.has_two_factor
    assert user.totp_secret_encrypted and secret not in user.totp_secret_encrypted
    # Recovery codes are stored as SHA-256 digests, never as typed.
    stored = db.scalars(select(RecoveryCode.code_hash).where(RecoveryCode.user_id == user.id))
    typed = _RECOVERY.findall(confirmed.text)
    assert all(len(h) == 64 and h not in typed for h in stored)


def test_sign_in_asks_for_the_code_and_the_half_signed_in_browser_reaches_nothing(
    db: Session,
    client_factory: Callable[..., TestClient],
    person_with_totp: tuple[Person, str, list[str]],
) -> None:
    person, secret, _ = person_with_totp
    browser = client_factory()
    first = password_step(browser, person.user.email, next_path="/gallery")
    assert first.status_code == 303
    assert first.headers["location"] == "/login/code?next=/gallery"
    half = browser.cookies.get(COOKIE)
    assert half
    # Only the code form: every page sends it to sign in, the API answers 401.
    for path in ("/", "/account", "/gallery", "/account/two-factor", "/team"):
        response = browser.get(path, follow_redirects=False)
        assert response.status_code == 303, path
        assert response.headers["location"].startswith("/login"), path
    assert browser.get("/api/v1/jobs").status_code == 401
    assert browser.get("/api/v1/me").status_code == 401
    # The sign-in page leads back to the code form, which can cancel the sign-in.
    back = browser.get("/login?next=/prompts", follow_redirects=False)
    assert back.headers["location"] == "/login/code?next=/prompts"
    done = code_step(browser, code(secret))
    assert done.status_code == 303
    assert done.headers["location"] == "/gallery"
    # A new token for the full session: the one seen before the code is dead.
    assert browser.cookies.get(COOKIE) != half
    assert browser.get("/account").status_code == 200
    stale = client_factory()
    stale.cookies.set(COOKIE, half)
    assert stale.get("/account", follow_redirects=False).status_code == 303
    assert stale.get("/login/code", follow_redirects=False).headers["location"] == "/login?next=/"


def test_cancelling_at_the_code_form_ends_the_password_step(
    client_factory: Callable[..., TestClient],
    person_with_totp: tuple[Person, str, list[str]],
) -> None:
    person, secret, _ = person_with_totp
    browser = client_factory()
    password_step(browser, person.user.email)
    half = browser.cookies.get(COOKIE)
    form = browser.get("/login/code")
    cancelled = browser.post(
        "/logout", data={"csrf_token": csrf_from(form.text)}, follow_redirects=False
    )
    assert cancelled.headers["location"] == "/login"
    # The password-step session is gone on the server, not only in this browser.
    replay = client_factory()
    replay.cookies.set(COOKIE, half)
    assert replay.get("/login/code", follow_redirects=False).status_code == 303
    assert (
        replay.post(
            "/login/code", data={"code": code(secret), "csrf_token": "x"}, follow_redirects=False
        )
        .headers["location"]
        .startswith("/login?")
    )


def test_a_code_cannot_be_used_twice(
    client_factory: Callable[..., TestClient],
    person_with_totp: tuple[Person, str, list[str]],
) -> None:
    person, secret, _ = person_with_totp
    seen = code(secret)
    one, two = client_factory(), client_factory()
    password_step(one, person.user.email)
    assert code_step(one, seen).status_code == 303
    password_step(two, person.user.email)
    replayed = code_step(two, seen)
    assert replayed.status_code == 400
    assert "used already" in error_of(replayed)
    # An older code of the window is refused as well; the next one works.
    assert code_step(two, code(secret, -1)).status_code == 400
    assert code_step(two, code(secret, 1)).status_code == 303


def test_wrong_codes_are_throttled_like_wrong_passwords(
    client_factory: Callable[..., TestClient],
    person_with_totp: tuple[Person, str, list[str]],
    quick_throttle: None,
) -> None:
    person, secret, _ = person_with_totp
    guesser = client_factory()
    assert password_step(guesser, person.user.email).status_code == 303
    right = code(secret)
    wrong = "123456" if right != "123456" else "654321"
    for _ in range(3):
        assert code_step(guesser, wrong).status_code == 400
    refused = code_step(guesser, wrong)
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "2"
    # The right code waits too, and a correct password again does not clear the count.
    assert code_step(guesser, right).status_code == 429
    other = client_factory()
    assert password_step(other, person.user.email).status_code == 303
    assert code_step(other, right).status_code == 429
    time.sleep(DELAY_S + 0.1)
    assert code_step(other, right).status_code == 303


def test_a_recovery_code_signs_in_once(
    client_factory: Callable[..., TestClient],
    person_with_totp: tuple[Person, str, list[str]],
) -> None:
    person, _, codes = person_with_totp
    first = client_factory()
    password_step(first, person.user.email)
    # Typed in capitals and without dashes, as people do.
    assert code_step(first, codes[0].replace("-", "").upper()).status_code == 303
    again = client_factory()
    password_step(again, person.user.email)
    assert code_step(again, codes[0]).status_code == 400
    assert code_step(again, codes[1]).status_code == 303
    page = again.get("/account/two-factor")
    assert "8 unused recovery codes" in page.text


def test_new_recovery_codes_replace_the_old_ones(
    client_factory: Callable[..., TestClient],
    person_with_totp: tuple[Person, str, list[str]],
) -> None:
    person, secret, old = person_with_totp
    client = client_factory()
    password_step(client, person.user.email)
    code_step(client, code(secret))
    fresh = post_form(
        client,
        "/account/two-factor",
        "/account/two-factor/recovery-codes",
        {"code": code(secret, 1)},
    )
    assert fresh.status_code == 201
    new = _RECOVERY.findall(fresh.text)
    assert len(new) == 10 and not set(new) & set(old)
    other = client_factory()
    password_step(other, person.user.email)
    assert code_step(other, old[2]).status_code == 400
    assert code_step(other, new[0]).status_code == 303


def test_turning_it_off_needs_the_password_and_a_code(
    db: Session,
    client_factory: Callable[..., TestClient],
    person_with_totp: tuple[Person, str, list[str]],
) -> None:
    person, _, codes = person_with_totp
    client = client_factory()
    password_step(client, person.user.email)
    assert code_step(client, codes[0]).status_code == 303
    page, path = "/account/two-factor", "/account/two-factor/disable"
    no_password = post_form(client, page, path, {"current_password": "nope", "code": codes[1]})
    assert no_password.status_code == 400
    assert "password" in error_of(no_password)
    no_code = post_form(client, page, path, {"current_password": PASSWORD, "code": "12"})
    assert no_code.status_code == 400
    assert "code" in error_of(no_code)
    off = post_form(client, page, path, {"current_password": PASSWORD, "code": codes[1]})
    assert off.status_code == 303
    db.expire_all()
    user = db.get(User, person.user.id)
    assert user is not None and not user.has_two_factor
    assert user.totp_secret_encrypted is None
    assert not db.scalars(select(RecoveryCode).where(RecoveryCode.user_id == user.id)).all()
    # The password alone signs in again.
    assert password_step(client_factory(), person.user.email).headers["location"] == "/"


def _team_requires(db: Session, team: Team) -> bool:
    db.expire_all()
    return bool(db.scalar(select(Team.require_two_factor).where(Team.id == team.id)))


def _has_two_factor(db: Session, person: Person) -> bool:
    db.expire_all()
    user = db.get(User, person.user.id)
    assert user is not None
    return user.has_two_factor


def _turn_policy(client: TestClient, on: bool) -> None:
    data = {"required": "on"} if on else {}
    assert post_form(client, "/team", "/team/two-factor", data).status_code == 303


def test_team_policy_sends_managers_to_setup_but_not_members_and_keeps_tokens(
    db: Session, client_factory: Callable[..., TestClient]
) -> None:
    team = make_team(db)
    admin = make_person(db, team=team, role=Role.ADMIN)
    manager = make_person(db, team=team, role=Role.MANAGER)
    member = make_person(db, team=team, role=Role.MEMBER)
    token = issue_token(db, user_id=manager.user.id, team_id=team.id, name="script").secret

    admins_browser = client_factory()
    login(admins_browser, admin.user.email, PASSWORD)
    _turn_policy(admins_browser, on=True)
    # The admin who turned it on has none yet: every page now leads to the setup.
    assert admins_browser.get("/", follow_redirects=False).headers["location"] == (
        "/account/two-factor"
    )

    managers_browser = client_factory()
    login(managers_browser, manager.user.email, PASSWORD)
    for path in ("/", "/gallery", "/account", "/account/tokens", "/costs"):
        response = managers_browser.get(path, follow_redirects=False)
        assert response.status_code == 303, path
        assert response.headers["location"] == "/account/two-factor", path
    api = managers_browser.get("/api/v1/jobs")
    assert api.status_code == 403
    assert api.json()["error"]["code"] == "two_factor_setup_required"
    setup_page = managers_browser.get("/account/two-factor")
    assert setup_page.status_code == 200
    assert "asks its managers and admins" in setup_page.text
    # Their API token keeps working: the rule is for browser sign-in.
    assert (
        managers_browser.get(
            "/api/v1/jobs", headers={"Authorization": f"Bearer {token}"}
        ).status_code
        == 200
    )

    members_browser = client_factory()
    login(members_browser, member.user.email, PASSWORD)
    assert members_browser.get("/", follow_redirects=False).status_code == 200

    # Once set up the manager works normally, and signs in with a code from then on.
    secret, _ = enable_two_factor(managers_browser)
    assert managers_browser.get("/", follow_redirects=False).status_code == 200
    again = client_factory()
    assert password_step(again, manager.user.email).headers["location"].startswith("/login/code")
    assert code_step(again, code(secret)).status_code == 303

    # The admin bound by the policy cannot turn it off before setting up either...
    setup_token = csrf_from(admins_browser.get("/account/two-factor").text)
    refused = admins_browser.post(
        "/team/two-factor", data={"csrf_token": setup_token}, follow_redirects=False
    )
    assert refused.headers["location"] == "/account/two-factor"
    assert _team_requires(db, team)
    # ...and once set up, can.
    enable_two_factor(admins_browser)
    _turn_policy(admins_browser, on=False)
    assert not _team_requires(db, team)


def test_an_admin_resets_a_members_second_factor(
    db: Session, client_factory: Callable[..., TestClient]
) -> None:
    team = make_team(db)
    admin = make_person(db, team=team, role=Role.ADMIN)
    manager = make_person(db, team=team, role=Role.MANAGER)
    outsider = make_person(db, role=Role.ADMIN)
    managers_browser = client_factory()
    login(managers_browser, manager.user.email, PASSWORD)
    enable_two_factor(managers_browser)

    admins_browser = client_factory()
    login(admins_browser, admin.user.email, PASSWORD)
    team_page = admins_browser.get("/team").text
    reset_path = f"/team/members/{manager.user.id}/two-factor/reset"
    assert reset_path in team_page
    # An admin of another team cannot reach them.
    outsiders_browser = client_factory()
    login(outsiders_browser, outsider.user.email, PASSWORD)
    assert post_form(outsiders_browser, "/team", reset_path, {}).status_code == 404
    assert _has_two_factor(db, manager)

    _turn_policy(admins_browser, on=True)
    # The policy binds the admin too: a second factor of their own first, then the reset.
    enable_two_factor(admins_browser)
    assert post_form(admins_browser, "/team", reset_path, {}).status_code == 303
    assert not _has_two_factor(db, manager)
    # The manager signs in with the password alone and is sent to set it up again.
    after = client_factory()
    assert password_step(after, manager.user.email).headers["location"] == "/"
    assert after.get("/", follow_redirects=False).headers["location"] == "/account/two-factor"


def test_a_member_cannot_reset_anyone(
    db: Session, client_factory: Callable[..., TestClient]
) -> None:
    team = make_team(db)
    member = make_person(db, team=team, role=Role.MEMBER)
    manager = make_person(db, team=team, role=Role.MANAGER)
    browser = client_factory()
    login(browser, member.user.email, PASSWORD)
    path = f"/team/members/{manager.user.id}/two-factor/reset"
    assert post_form(browser, "/account", path, {}).status_code == 403
    assert post_form(browser, "/account", "/team/two-factor", {"required": "on"}).status_code == 403


def test_the_qr_code_carries_an_otpauth_uri_for_the_same_key(db: Session) -> None:
    person = make_person(db)
    enrolment = begin_setup(db, person.user)
    parsed = pyotp.parse_uri(enrolment.uri)
    assert isinstance(parsed, pyotp.TOTP)
    assert parsed.secret == enrolment.secret
    assert parsed.issuer == "FLUX Team Studio" and parsed.name == person.user.email
    assert (parsed.digits, parsed.interval) == (6, 30)
    svg = enrolment.qr_svg()
    assert svg.startswith("<svg") and "<script" not in svg
    # The same data drawn again gives the same picture: the SVG encodes this URI.
    assert svg == segno.make(enrolment.uri, error="m").svg_inline(
        scale=5, border=2, dark="#111", light="#fff", omitsize=False
    )
