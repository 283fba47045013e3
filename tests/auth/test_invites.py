"""Invite links: shown once, stored hashed, single use, expiring, carrying a role."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.auth.models import AuthSession, Invite, Role
from app.auth.service import (
    NotInTeam,
    accept_invite_new_user,
    find_user_by_email,
    membership_of,
)
from app.db import utcnow
from app.security import token_hash
from app.settings import get_settings
from tests.auth.support import csrf_from, login
from tests.factories import PASSWORD, Person, make_person

COOKIE = "__Host-studio_session"
LINK = re.compile(r'value="https://testserver/invite/([A-Za-z0-9_-]+)"')


def _as(client_factory: Callable[..., TestClient], person: Person) -> TestClient:
    client = client_factory()
    login(client, person.user.email, PASSWORD)
    return client


def _invite(admin_client: TestClient, role: str = "member", email: str = "") -> str:
    token = csrf_from(admin_client.get("/account").text)
    page = admin_client.post(
        "/team/invites", data={"role": role, "email": email, "csrf_token": token}
    )
    assert page.status_code == 201, page.text[:300]
    found = LINK.search(page.text)
    assert found, "the invite link is shown on the page"
    return found.group(1)


def _sign_up(client: TestClient, raw: str, **fields: str):
    page = client.get(f"/invite/{raw}")
    data = {
        "name": "New Person",
        "email": "new.person@example.com",
        "password": "a long enough password",
        "password_again": "a long enough password",
        "csrf_token": csrf_from(page.text),
        **fields,
    }
    return client.post(f"/invite/{raw}", data=data, follow_redirects=False)


def test_new_person_joins_with_the_invited_role_and_is_signed_in(
    db: Session, client_factory: Callable[..., TestClient]
) -> None:
    admin = make_person(db, role=Role.ADMIN)
    raw = _invite(_as(client_factory, admin), role="manager")
    # Only the hash is stored; the link is not shown again.
    invite = db.scalars(select(Invite).where(Invite.team_id == admin.team.id)).one()
    assert invite.token_hash == token_hash(raw) and raw not in invite.token_hash
    assert invite.expires_at - utcnow() > timedelta(days=6, hours=23)
    assert raw not in _as(client_factory, admin).get("/team").text

    newcomer = client_factory()
    page = newcomer.get(f"/invite/{raw}")
    assert page.status_code == 200 and admin.team.name in page.text and "manager" in page.text
    response = _sign_up(newcomer, raw)
    assert response.status_code == 303
    user = find_user_by_email(db, "new.person@example.com")
    assert user is not None and user.name == "New Person"
    assert membership_of(db, user_id=user.id, team_id=admin.team.id).role == "manager"  # type: ignore[union-attr]
    session = db.get(AuthSession, token_hash(newcomer.cookies.get(COOKIE) or ""))
    assert session is not None and session.team_id == admin.team.id
    db.refresh(invite)
    assert invite.accepted_at is not None and invite.accepted_by_id == user.id


def test_an_invite_works_once(db: Session, client_factory: Callable[..., TestClient]) -> None:
    admin = make_person(db, role=Role.ADMIN)
    raw = _invite(_as(client_factory, admin))
    # A second person opened the link at the same time and submits after the first.
    late = client_factory()
    late_token = csrf_from(late.get(f"/invite/{raw}").text)
    assert _sign_up(client_factory(), raw).status_code == 303
    assert client_factory().get(f"/invite/{raw}").status_code == 404
    second = late.post(
        f"/invite/{raw}",
        data={
            "name": "Late",
            "email": "second@example.com",
            "password": "a long enough password",
            "password_again": "a long enough password",
            "csrf_token": late_token,
        },
        follow_redirects=False,
    )
    assert second.status_code == 404
    assert find_user_by_email(db, "second@example.com") is None
    existing = make_person(db)
    assert _post_join(_as(client_factory, existing), raw).status_code == 404
    assert membership_of(db, user_id=existing.user.id, team_id=admin.team.id) is None


def _post_join(client: TestClient, raw: str):
    token = csrf_from(client.get("/account").text)
    return client.post(f"/invite/{raw}", data={"csrf_token": token}, follow_redirects=False)


def test_an_expired_invite_is_refused(
    db: Session, client_factory: Callable[..., TestClient]
) -> None:
    admin = make_person(db, role=Role.ADMIN)
    raw = _invite(_as(client_factory, admin))
    invite = db.scalars(select(Invite).where(Invite.token_hash == token_hash(raw))).one()
    invite.expires_at = utcnow() - timedelta(seconds=1)
    db.flush()
    page = client_factory().get(f"/invite/{raw}")
    assert page.status_code == 404 and "expired" in page.text
    assert client_factory().get("/invite/made-up-token").status_code == 404


def test_a_signed_in_person_joins_and_switches_to_the_team(
    db: Session, client_factory: Callable[..., TestClient]
) -> None:
    admin = make_person(db, role=Role.ADMIN)
    raw = _invite(_as(client_factory, admin), role="member")
    elsewhere = make_person(db)
    client = _as(client_factory, elsewhere)
    assert "Join " + admin.team.name in client.get(f"/invite/{raw}").text
    assert _post_join(client, raw).status_code == 303
    assert membership_of(db, user_id=elsewhere.user.id, team_id=admin.team.id).role == "member"  # type: ignore[union-attr]
    assert membership_of(db, user_id=elsewhere.user.id, team_id=elsewhere.team.id) is not None
    session = db.get(AuthSession, token_hash(client.cookies.get(COOKIE) or ""))
    assert session is not None
    db.refresh(session)
    assert session.team_id == admin.team.id


def test_an_invite_for_an_email_is_only_for_that_email(
    db: Session, client_factory: Callable[..., TestClient]
) -> None:
    admin = make_person(db, role=Role.ADMIN)
    raw = _invite(_as(client_factory, admin), email="invited@example.com")
    someone_else = make_person(db)
    refused = _post_join(_as(client_factory, someone_else), raw)
    assert refused.status_code == 409 and "invited@example.com" in refused.text
    # A new account from the link gets the invited email, whatever the form said.
    assert _sign_up(client_factory(), raw, email="other@example.com").status_code == 303
    assert find_user_by_email(db, "invited@example.com") is not None
    assert find_user_by_email(db, "other@example.com") is None


def test_a_refused_sign_up_does_not_use_up_the_link(
    db: Session, client_factory: Callable[..., TestClient]
) -> None:
    admin = make_person(db, role=Role.ADMIN)
    raw = _invite(_as(client_factory, admin))
    taken = _sign_up(client_factory(), raw, email=admin.user.email)
    assert taken.status_code == 400 and "No new account can be made" in taken.text
    short = _sign_up(client_factory(), raw, password="short", password_again="short")
    assert short.status_code == 400 and "at least 12 characters" in short.text
    assert _sign_up(client_factory(), raw).status_code == 303


def test_invite_sign_up_needs_the_form_token(
    db: Session, client_factory: Callable[..., TestClient]
) -> None:
    admin = make_person(db, role=Role.ADMIN)
    raw = _invite(_as(client_factory, admin))
    client = client_factory()
    client.get(f"/invite/{raw}")
    response = client.post(
        f"/invite/{raw}",
        data={
            "name": "Forged",
            "email": "forged@example.com",
            "password": "a long enough password",
            "password_again": "a long enough password",
        },
        follow_redirects=False,
    )
    assert response.status_code == 403
    assert find_user_by_email(db, "forged@example.com") is None
    assert client_factory().get(f"/invite/{raw}").status_code == 200


def test_admin_withdraws_an_invite(db: Session, client_factory: Callable[..., TestClient]) -> None:
    admin = make_person(db, role=Role.ADMIN)
    client = _as(client_factory, admin)
    raw = _invite(client)
    invite = db.scalars(select(Invite).where(Invite.token_hash == token_hash(raw))).one()
    token = csrf_from(client.get("/account").text)
    response = client.post(
        f"/team/invites/{invite.id}/revoke", data={"csrf_token": token}, follow_redirects=False
    )
    assert response.status_code == 303
    assert client_factory().get(f"/invite/{raw}").status_code == 404


def _answer(response) -> str:
    found = re.search(r'id="invite-error">([^<]*)<', response.text)
    assert found, response.text[:500]
    return found.group(1)


def test_the_invite_form_does_not_tell_which_emails_have_accounts(
    db: Session, client_factory: Callable[..., TestClient]
) -> None:
    admin = make_person(db, role=Role.ADMIN)
    other = make_person(db)
    raw = _invite(_as(client_factory, admin))
    # A weak password gets the same answer for a taken email and a free one.
    weak_taken = _sign_up(
        client_factory(), raw, email=other.user.email, password="password1234",
        password_again="password1234",
    )  # fmt: skip
    weak_free = _sign_up(
        client_factory(), raw, email="free.one@example.com", password="password1234",
        password_again="password1234",
    )  # fmt: skip
    assert weak_taken.status_code == weak_free.status_code == 400
    assert _answer(weak_taken) == _answer(weak_free)
    # A taken email never hears "exists": the answer is the same for any taken email, and
    # names no account.
    first = _sign_up(client_factory(), raw, email=other.user.email)
    second = _sign_up(client_factory(), raw, email=admin.user.email)
    assert first.status_code == second.status_code == 400
    assert _answer(first) == _answer(second)
    assert "exist" not in _answer(first).lower()
    assert other.user.email not in _answer(first)


def test_an_invite_link_stops_after_too_many_refused_tries(
    db: Session, client_factory: Callable[..., TestClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INVITE_MAX_ATTEMPTS", "3")
    get_settings.cache_clear()
    admin = make_person(db, role=Role.ADMIN)
    raw = _invite(_as(client_factory, admin))
    emails = [make_person(db).user.email for _ in range(3)]
    for email in emails[:2]:
        assert _sign_up(client_factory(), raw, email=email).status_code == 400
    # The third refusal wears the link out, and says so.
    last = _sign_up(client_factory(), raw, email=emails[2])
    assert last.status_code == 404 and "tried too many times" in last.text
    # From now on the link refuses everyone, with a clear word, even a free email.
    worn = client_factory().get(f"/invite/{raw}")
    assert worn.status_code == 404 and "tried too many times" in worn.text
    with pytest.raises(NotInTeam, match="tried too many times"):
        accept_invite_new_user(
            db, raw, name="Late", email="free.two@example.com", password=PASSWORD
        )
    assert find_user_by_email(db, "free.two@example.com") is None


def test_invite_links_use_public_url_and_never_the_host_header(
    db: Session, client_factory: Callable[..., TestClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = make_person(db, role=Role.ADMIN)
    client = _as(client_factory, admin)
    monkeypatch.setenv("PUBLIC_URL", "https://studio.example.com/")
    get_settings.cache_clear()
    token = csrf_from(client.get("/account").text)
    page = client.post(
        "/team/invites",
        data={"role": "member", "email": "", "csrf_token": token},
        headers={"host": "evil.example"},
    )
    assert page.status_code == 201
    assert 'value="https://studio.example.com/invite/' in page.text
    assert "evil.example" not in page.text

    monkeypatch.delenv("PUBLIC_URL")
    get_settings.cache_clear()
    refused = client.post(
        "/team/invites", data={"role": "member", "email": "", "csrf_token": token}
    )
    assert refused.status_code == 409
    assert "set PUBLIC_URL" in refused.text
    assert "/invite/" not in refused.text
