"""The account page: name, email, password, sessions, and anti-forgery on every change."""

from __future__ import annotations

import re
from collections.abc import Callable

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.auth.models import AuthSession, User
from app.security import token_hash, verify_password
from tests.auth.support import csrf_from, login
from tests.factories import PASSWORD, make_person

COOKIE = "__Host-studio_session"
NEW_PASSWORD = "a much longer new passphrase"


def _signed_in(
    db: Session, client_factory: Callable[..., TestClient], count: int = 1
) -> tuple[User, list[TestClient]]:
    person = make_person(db)
    clients = []
    for _ in range(count):
        client = client_factory()
        login(client, person.user.email, PASSWORD)
        clients.append(client)
    return person.user, clients


def _post(client: TestClient, path: str, data: dict[str, str]):
    token = csrf_from(client.get("/account").text)
    return client.post(path, data={**data, "csrf_token": token}, follow_redirects=False)


def test_account_page_shows_the_person_and_their_sessions(
    db: Session, client_factory: Callable[..., TestClient]
) -> None:
    user, (client, _) = _signed_in(db, client_factory, count=2)
    page = client.get("/account")
    assert page.status_code == 200
    assert user.email in page.text
    assert len(re.findall(r"/account/sessions/[0-9a-f-]{36}/end", page.text)) == 2
    assert "(this browser)" in page.text


def test_account_page_needs_sign_in(client: TestClient) -> None:
    response = client.get("/account", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=/account"


def test_password_change_ends_other_sessions_and_renews_this_one(
    db: Session, client_factory: Callable[..., TestClient]
) -> None:
    user, (mine, other) = _signed_in(db, client_factory, count=2)
    before = mine.cookies.get(COOKIE)
    response = _post(
        mine,
        "/account/password",
        {
            "current_password": PASSWORD,
            "new_password": NEW_PASSWORD,
            "new_password_again": NEW_PASSWORD,
        },
    )
    assert response.status_code == 303
    after = mine.cookies.get(COOKIE)
    assert before and after and before != after
    db.expire_all()
    assert db.get(AuthSession, token_hash(before)) is None
    assert db.scalars(select(AuthSession).where(AuthSession.user_id == user.id)).all() == [
        db.get(AuthSession, token_hash(after))
    ]
    assert "Every other browser was signed out" in mine.get(response.headers["location"]).text
    assert other.get("/account", follow_redirects=False).status_code == 303
    assert verify_password(user.password_hash, NEW_PASSWORD)


def test_password_change_needs_the_current_password(
    db: Session, client_factory: Callable[..., TestClient]
) -> None:
    user, (client,) = _signed_in(db, client_factory)
    response = _post(
        client,
        "/account/password",
        {
            "current_password": "not my password",
            "new_password": NEW_PASSWORD,
            "new_password_again": NEW_PASSWORD,
        },
    )
    assert response.status_code == 400
    assert "current password is not correct" in response.text
    db.refresh(user)
    assert verify_password(user.password_hash, PASSWORD)


def test_too_short_or_mismatched_new_password_is_refused_with_the_reason(
    db: Session, client_factory: Callable[..., TestClient]
) -> None:
    _, (client,) = _signed_in(db, client_factory)
    short = _post(
        client,
        "/account/password",
        {"current_password": PASSWORD, "new_password": "short", "new_password_again": "short"},
    )
    assert short.status_code == 400 and "at least 12 characters" in short.text
    differ = _post(
        client,
        "/account/password",
        {
            "current_password": PASSWORD,
            "new_password": NEW_PASSWORD,
            "new_password_again": NEW_PASSWORD + "x",
        },
    )
    assert differ.status_code == 400 and "differ" in differ.text


def test_email_change_needs_the_current_password(
    db: Session, client_factory: Callable[..., TestClient]
) -> None:
    user, (client,) = _signed_in(db, client_factory)
    old_email = user.email
    refused = _post(
        client,
        "/account/email",
        {"email": "new.address@example.com", "current_password": "not my password"},
    )
    assert refused.status_code == 400
    db.refresh(user)
    assert user.email == old_email
    done = _post(
        client,
        "/account/email",
        {"email": "new.address@example.com", "current_password": PASSWORD},
    )
    assert done.status_code == 303
    db.refresh(user)
    assert user.email == "new.address@example.com"
    login(client_factory(), "new.address@example.com", PASSWORD)


def test_email_of_another_account_cannot_be_taken(
    db: Session, client_factory: Callable[..., TestClient]
) -> None:
    other = make_person(db)
    _, (client,) = _signed_in(db, client_factory)
    response = _post(
        client,
        "/account/email",
        {"email": other.user.email.upper(), "current_password": PASSWORD},
    )
    assert response.status_code == 400
    assert "Another account uses this email" in response.text


def test_name_change(db: Session, client_factory: Callable[..., TestClient]) -> None:
    user, (client,) = _signed_in(db, client_factory)
    assert _post(client, "/account/name", {"name": "  Ada Lovelace "}).status_code == 303
    db.refresh(user)
    assert user.name == "Ada Lovelace"
    empty = _post(client, "/account/name", {"name": "   "})
    assert empty.status_code == 400 and "name" in empty.text


def test_sign_out_another_session(db: Session, client_factory: Callable[..., TestClient]) -> None:
    _, (mine, other) = _signed_in(db, client_factory, count=2)
    other_hash = token_hash(other.cookies.get(COOKIE) or "")
    other_session = db.get(AuthSession, other_hash)
    assert other_session is not None
    path = f"/account/sessions/{other_session.id}/end"
    # Ending another browser's session asks for the password again.
    refused = _post(mine, path, {"current_password": "not my password"})
    assert refused.status_code == 400
    assert "current password" in refused.text
    assert other.get("/account").status_code == 200
    response = _post(mine, path, {"current_password": PASSWORD})
    assert response.status_code == 303
    assert other.get("/account", follow_redirects=False).status_code == 303
    assert mine.get("/account").status_code == 200


def test_sign_out_every_other_session(
    db: Session, client_factory: Callable[..., TestClient]
) -> None:
    _, (mine, second, third) = _signed_in(db, client_factory, count=3)
    assert _post(mine, "/account/sessions/end-others", {}).status_code == 400
    assert second.get("/account").status_code == 200
    ended = _post(mine, "/account/sessions/end-others", {"current_password": PASSWORD})
    assert ended.status_code == 303
    assert mine.get("/account").status_code == 200
    for client in (second, third):
        assert client.get("/account", follow_redirects=False).status_code == 303


def test_nobody_can_end_someone_elses_session(
    db: Session, client_factory: Callable[..., TestClient]
) -> None:
    _, (victim,) = _signed_in(db, client_factory)
    _, (intruder,) = _signed_in(db, client_factory)
    session = db.get(AuthSession, token_hash(victim.cookies.get(COOKIE) or ""))
    assert session is not None
    path = f"/account/sessions/{session.id}/end"
    assert _post(intruder, path, {"current_password": PASSWORD}).status_code == 404
    assert victim.get("/account").status_code == 200


def test_changes_without_or_with_a_wrong_csrf_token_are_refused(
    db: Session, client_factory: Callable[..., TestClient]
) -> None:
    user, (client,) = _signed_in(db, client_factory)
    for data in ({"name": "Forged"}, {"name": "Forged", "csrf_token": "wrong-token"}):
        response = client.post("/account/name", data=data, follow_redirects=False)
        assert response.status_code == 403
        assert "reload the page" in response.text
    db.refresh(user)
    assert user.name != "Forged"
    # The token another session holds is no good here either.
    _, (other,) = _signed_in(db, client_factory)
    foreign = csrf_from(other.get("/account").text)
    response = client.post(
        "/account/name", data={"name": "Forged", "csrf_token": foreign}, follow_redirects=False
    )
    assert response.status_code == 403


def test_htmx_requests_may_send_the_token_as_a_header(
    db: Session, client_factory: Callable[..., TestClient]
) -> None:
    user, (client,) = _signed_in(db, client_factory)
    page = client.get("/account").text
    header_token = re.search(r'"X-CSRF-Token": "([^"]+)"', page)
    assert header_token, "base.html should put the token in hx-headers"
    response = client.post(
        "/account/name",
        data={"name": "Via Header"},
        headers={"X-CSRF-Token": header_token.group(1)},
        follow_redirects=False,
    )
    assert response.status_code == 303
    db.refresh(user)
    assert user.name == "Via Header"
