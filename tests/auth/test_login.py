"""Signing in and out: the form, sessions, cookies, renewal, timeouts and redirects."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.auth.models import AuthSession
from app.db import utcnow
from app.security import token_hash
from tests.auth.support import csrf_from, login
from tests.factories import PASSWORD, make_person

COOKIE = "__Host-studio_session"
DOMAIN = "testserver.local"  # where httpx files cookies from https://testserver


def _post_login(client: TestClient, email: str, password: str, **extra: str):
    page = client.get("/login")
    data = {"email": email, "password": password, "csrf_token": csrf_from(page.text), **extra}
    return client.post("/login", data=data, follow_redirects=False)


def test_sign_in_sets_a_host_only_secure_cookie_and_stores_only_its_hash(
    db: Session, client: TestClient
) -> None:
    person = make_person(db)
    response = _post_login(client, person.user.email, PASSWORD)
    assert response.status_code == 303
    assert response.headers["location"] == "/"
    set_cookie = next(
        v for v in response.headers.get_list("set-cookie") if v.startswith(COOKIE + "=")
    )
    lowered = set_cookie.lower()
    for attribute in ("httponly", "secure", "samesite=lax", "path=/"):
        assert attribute in lowered
    assert "domain=" not in lowered
    raw = client.cookies.get(COOKIE)
    assert raw and len(raw) >= 43
    stored = db.get(AuthSession, token_hash(raw))
    assert stored is not None and stored.user_id == person.user.id
    assert (
        db.scalar(
            select(func.count()).select_from(AuthSession).where(AuthSession.token_hash == raw)
        )
        == 0
    )
    assert client.get("/account").status_code == 200


def test_wrong_password_and_unknown_email_get_the_same_answer(
    db: Session, client: TestClient
) -> None:
    person = make_person(db)
    wrong = _post_login(client, person.user.email, "not the password")
    unknown = _post_login(client, "nobody@example.com", "not the password")
    assert wrong.status_code == unknown.status_code == 400
    assert "The email or password is wrong." in wrong.text
    assert "The email or password is wrong." in unknown.text
    assert COOKIE not in client.cookies


def test_login_without_or_with_a_forged_form_token_is_refused(
    db: Session, client: TestClient
) -> None:
    person = make_person(db)
    client.get("/login")
    missing = client.post(
        "/login", data={"email": person.user.email, "password": PASSWORD}, follow_redirects=False
    )
    forged = client.post(
        "/login",
        data={"email": person.user.email, "password": PASSWORD, "csrf_token": "0" * 64},
        follow_redirects=False,
    )
    assert missing.status_code == forged.status_code == 403
    assert COOKIE not in client.cookies


def test_a_token_from_another_browser_does_not_work(
    db: Session, client_factory: Callable[..., TestClient]
) -> None:
    person = make_person(db)
    attacker, victim = client_factory(), client_factory()
    token = csrf_from(attacker.get("/login").text)
    victim.get("/login")
    response = victim.post(
        "/login",
        data={"email": person.user.email, "password": PASSWORD, "csrf_token": token},
        follow_redirects=False,
    )
    assert response.status_code == 403


def test_session_id_is_renewed_at_sign_in(db: Session, client: TestClient) -> None:
    person = make_person(db)
    login(client, person.user.email, PASSWORD)
    first = client.cookies.get(COOKIE)
    login(client, person.user.email, PASSWORD)
    second = client.cookies.get(COOKIE)
    assert first and second and first != second
    # The earlier id is dead on the server, not merely replaced in this browser.
    assert db.get(AuthSession, token_hash(first)) is None


def test_a_planted_session_id_is_never_adopted(db: Session, client: TestClient) -> None:
    person = make_person(db)
    planted = "planted-by-someone-else-0123456789abcdefghijklmnop"
    client.cookies.set(COOKIE, planted, domain=DOMAIN)
    login(client, person.user.email, PASSWORD)
    assert client.cookies.get(COOKIE) != planted
    assert db.get(AuthSession, token_hash(planted)) is None


def test_sign_out_deletes_the_session_row(db: Session, client: TestClient) -> None:
    person = make_person(db)
    login(client, person.user.email, PASSWORD)
    raw = client.cookies.get(COOKIE)
    assert raw
    token = csrf_from(client.get("/account").text)
    response = client.post("/logout", data={"csrf_token": token}, follow_redirects=False)
    assert response.status_code == 303
    db.expire_all()
    assert db.get(AuthSession, token_hash(raw)) is None
    # Replaying the old cookie does not get back in.
    client.cookies.set(COOKIE, raw, domain=DOMAIN)
    assert client.get("/account", follow_redirects=False).status_code == 303


def test_sign_out_needs_the_session_csrf_token(db: Session, client: TestClient) -> None:
    person = make_person(db)
    login(client, person.user.email, PASSWORD)
    response = client.post("/logout", data={"csrf_token": "wrong"}, follow_redirects=False)
    assert response.status_code == 403
    assert client.get("/account").status_code == 200


def test_idle_timeout_ends_the_session(db: Session, client: TestClient) -> None:
    from app.settings import get_settings

    person = make_person(db)
    login(client, person.user.email, PASSWORD)
    session = db.get(AuthSession, token_hash(client.cookies.get(COOKIE) or ""))
    assert session is not None
    idle = timedelta(minutes=get_settings().SESSION_IDLE_MINUTES)
    session.last_seen_at = utcnow() - idle + timedelta(minutes=1)
    db.flush()
    assert client.get("/account", follow_redirects=False).status_code == 200
    session.last_seen_at = utcnow() - idle - timedelta(seconds=1)
    db.flush()
    response = client.get("/account", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=/account"


def test_absolute_timeout_ends_a_busy_session(db: Session, client: TestClient) -> None:
    person = make_person(db)
    login(client, person.user.email, PASSWORD)
    session = db.get(AuthSession, token_hash(client.cookies.get(COOKIE) or ""))
    assert session is not None
    session.expires_at = utcnow() - timedelta(seconds=1)
    session.last_seen_at = utcnow()
    db.flush()
    assert client.get("/account", follow_redirects=False).status_code == 303


def test_next_is_followed_only_for_same_site_paths(db: Session, client: TestClient) -> None:
    person = make_person(db)
    email = person.user.email
    assert (
        _post_login(client, email, PASSWORD, next="/gallery?page=2").headers["location"]
        == "/gallery?page=2"
    )
    for hostile in (
        "https://evil.example/",
        "//evil.example/",
        "/\\evil.example",
        "\\\\evil.example",
        "http:/evil.example",
        "javascript:alert(1)",
        "/\t/evil.example",
        "evil.example",
    ):
        response = _post_login(client, email, PASSWORD, next=hostile)
        assert response.status_code == 303
        assert response.headers["location"] == "/", hostile


def test_purge_deletes_only_timed_out_sessions(db: Session) -> None:
    from app.auth.service import purge_ended_sessions, start_session
    from app.settings import get_settings

    person = make_person(db)
    _, live = start_session(db, person.user)
    _, idle = start_session(db, person.user)
    _, old = start_session(db, person.user)
    idle.last_seen_at = utcnow() - timedelta(minutes=get_settings().SESSION_IDLE_MINUTES + 1)
    old.expires_at = utcnow() - timedelta(seconds=1)
    db.flush()
    assert purge_ended_sessions(db) == 2
    remaining = db.scalars(select(AuthSession).where(AuthSession.user_id == person.user.id)).all()
    assert remaining == [live]
