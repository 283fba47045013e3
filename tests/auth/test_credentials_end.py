"""A credential ends when the right to use it ends, and a removed person can come back.

Removing a member revokes their sessions and API tokens for that team for good; a password
change ends the other sessions and, when ticked, the tokens; tokens can expire; a person in no
team is told how to return, and an invite link takes an existing account with its password.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.auth.models import ApiToken, Role
from app.auth.service import create_invite, membership_of, remove_member
from app.auth.tokens import issue_token
from app.db import utcnow
from tests.auth.support import csrf_from, login
from tests.factories import PASSWORD, Person, make_person

COOKIE = "__Host-studio_session"


def _as(client_factory: Callable[..., TestClient], person: Person) -> TestClient:
    client = client_factory()
    login(client, person.user.email, PASSWORD)
    return client


def _me(client_factory: Callable[..., TestClient], secret: str) -> int:
    """The status of GET /api/v1/me with this token, from a client with no cookies."""
    return client_factory().get("/api/v1/me", headers={"Authorization": f"Bearer {secret}"})


def _join_with_account(client: TestClient, raw: str, email: str, password: str):
    page = client.get(f"/invite/{raw}")
    assert page.status_code == 200, page.text[:300]
    assert "I have an account" in page.text
    return client.post(
        f"/invite/{raw}",
        data={
            "account": "existing",
            "email": email,
            "password": password,
            "csrf_token": csrf_from(page.text),
        },
        follow_redirects=False,
    )


def test_removal_ends_tokens_for_good_and_the_person_can_rejoin(
    db: Session, client_factory: Callable[..., TestClient]
) -> None:
    admin = make_person(db, role=Role.ADMIN)
    member = make_person(db, team=admin.team)
    secret = issue_token(db, user_id=member.user.id, team_id=admin.team.id, name="ci").secret
    db.commit()
    browser = _as(client_factory, member)
    assert _me(client_factory, secret).status_code == 200

    remove_member(db, team_id=admin.team.id, user_id=member.user.id, by=admin.user)
    # Committed (to the test's savepoint): a refused request rolls back what is not.
    db.commit()
    assert _me(client_factory, secret).status_code == 401
    assert browser.get("/account", follow_redirects=False).status_code == 303
    token = db.scalars(select(ApiToken).where(ApiToken.user_id == member.user.id)).one()
    assert token.revoked_at is not None, "the token is revoked in the database, not just hidden"

    # Signing in now shows where to go, not a dead end.
    fresh = client_factory()
    page = fresh.post(
        "/login",
        data={
            "email": member.user.email,
            "password": PASSWORD,
            "csrf_token": csrf_from(fresh.get("/login").text),
        },
        follow_redirects=False,
    )
    assert page.status_code == 403
    assert "not in any team" in page.text and "I have an account" in page.text

    # Invited again, they join with their existing account and password...
    raw, _ = create_invite(db, team_id=admin.team.id, created_by=admin.user, role=Role.MEMBER)
    db.commit()
    joined = _join_with_account(fresh, raw, member.user.email, PASSWORD)
    assert joined.status_code == 303, joined.text[:300]
    assert membership_of(db, user_id=member.user.id, team_id=admin.team.id) is not None
    assert COOKIE in fresh.cookies
    assert fresh.get("/account").status_code == 200
    # ...but the token made before the removal stays dead.
    assert _me(client_factory, secret).status_code == 401


def test_joining_with_an_account_needs_its_password_and_keeps_the_link(
    db: Session, client_factory: Callable[..., TestClient]
) -> None:
    admin = make_person(db, role=Role.ADMIN)
    other = make_person(db)
    raw, invite = create_invite(db, team_id=admin.team.id, created_by=admin.user, role=Role.MEMBER)
    db.commit()
    client = client_factory()
    wrong = _join_with_account(client, raw, other.user.email, "not the password")
    assert wrong.status_code == 400
    assert "email or password is wrong" in wrong.text
    assert membership_of(db, user_id=other.user.id, team_id=admin.team.id) is None
    db.refresh(invite)
    assert invite.accepted_at is None, "a failed attempt does not use up the link"
    assert invite.refused_attempts == 1, "but it counts against the link's attempts"
    assert _join_with_account(client, raw, other.user.email, PASSWORD).status_code == 303
    assert membership_of(db, user_id=other.user.id, team_id=admin.team.id) is not None


def test_an_account_with_a_second_factor_cannot_join_with_its_password_alone(
    db: Session, client_factory: Callable[..., TestClient]
) -> None:
    admin = make_person(db, role=Role.ADMIN)
    other = make_person(db)
    other.user.totp_secret_encrypted = "not read here"
    other.user.totp_enabled_at = utcnow()
    raw, _ = create_invite(db, team_id=admin.team.id, created_by=admin.user, role=Role.MEMBER)
    db.commit()
    refused = _join_with_account(client_factory(), raw, other.user.email, PASSWORD)
    assert refused.status_code == 409
    assert "sign in first" in refused.text
    assert membership_of(db, user_id=other.user.id, team_id=admin.team.id) is None


def test_the_new_account_form_points_an_existing_email_to_the_account_form(
    db: Session, client_factory: Callable[..., TestClient]
) -> None:
    admin = make_person(db, role=Role.ADMIN)
    existing = make_person(db)
    raw, _ = create_invite(db, team_id=admin.team.id, created_by=admin.user, role=Role.MEMBER)
    db.commit()
    client = client_factory()
    page = client.get(f"/invite/{raw}")
    response = client.post(
        f"/invite/{raw}",
        data={
            "name": "Again",
            "email": existing.user.email,
            "password": "another long password",
            "password_again": "another long password",
            "csrf_token": csrf_from(page.text),
        },
        follow_redirects=False,
    )
    assert response.status_code == 400
    assert "I have an account" in response.text


def test_password_change_ends_other_sessions_and_revokes_tokens_when_ticked(
    db: Session, client_factory: Callable[..., TestClient]
) -> None:
    person = make_person(db)
    kept = issue_token(db, user_id=person.user.id, team_id=person.team.id, name="kept").secret
    db.commit()
    browser = _as(client_factory, person)
    other_browser = _as(client_factory, person)

    page = browser.get("/account").text
    assert 'name="revoke_tokens" value="1" checked' in page, "the box is ticked by default"
    # Unticked: the sessions end, the tokens keep working.
    response = browser.post(
        "/account/password",
        data={
            "current_password": PASSWORD,
            "new_password": "a second long password",
            "new_password_again": "a second long password",
            "csrf_token": csrf_from(page),
        },
        follow_redirects=False,
    )
    assert response.status_code == 303
    assert other_browser.get("/account", follow_redirects=False).status_code == 303
    assert _me(client_factory, kept).status_code == 200

    # Ticked: every token of the person, in every team, is revoked too.
    page = browser.get("/account").text
    response = browser.post(
        "/account/password",
        data={
            "current_password": "a second long password",
            "new_password": "a third long password",
            "new_password_again": "a third long password",
            "revoke_tokens": "1",
            "csrf_token": csrf_from(page),
        },
        follow_redirects=False,
    )
    assert response.status_code == 303
    assert _me(client_factory, kept).status_code == 401
    assert "API tokens were revoked" in browser.get(response.headers["location"]).text


def test_tokens_expire_as_chosen_and_say_so(
    db: Session, client_factory: Callable[..., TestClient]
) -> None:
    person = make_person(db)
    browser = _as(client_factory, person)
    csrf = {"X-CSRF-Token": csrf_from(browser.get("/account").text)}

    default = browser.post("/api/v1/tokens", json={"name": "default"}, headers=csrf)
    assert default.status_code == 201, default.text
    never = browser.post(
        "/api/v1/tokens", json={"name": "never", "expires_in_days": None}, headers=csrf
    )
    month = browser.post(
        "/api/v1/tokens", json={"name": "month", "expires_in_days": 30}, headers=csrf
    )
    odd = browser.post("/api/v1/tokens", json={"name": "odd", "expires_in_days": 7}, headers=csrf)
    assert odd.status_code == 422
    assert never.json()["token"]["expires_at"] is None
    for response, days in ((default, 90), (month, 30)):
        token = db.get(ApiToken, response.json()["token"]["id"])
        assert token is not None and token.expires_at is not None
        assert abs(token.expires_at - (utcnow() + timedelta(days=days))) < timedelta(minutes=5)

    secret = month.json()["secret"]
    assert _me(client_factory, secret).status_code == 200
    token = db.get(ApiToken, month.json()["token"]["id"])
    assert token is not None
    token.expires_at = utcnow() - timedelta(minutes=1)
    db.commit()
    expired = _me(client_factory, secret)
    assert expired.status_code == 401
    assert "expired on" in expired.json()["error"]["message"]
    listed = {t["name"]: t for t in browser.get("/api/v1/tokens").json()}
    assert listed["month"]["state"] == "expired"
    assert listed["never"]["state"] == "active"


def test_the_tokens_page_creates_with_an_expiry_and_lists_it(
    db: Session, client_factory: Callable[..., TestClient]
) -> None:
    person = make_person(db)
    browser = _as(client_factory, person)
    page = browser.get("/account/tokens").text
    assert 'name="expires_in_days"' in page
    created = browser.post(
        "/account/tokens",
        data={"name": "laptop", "expires_in_days": "365", "csrf_token": csrf_from(page)},
    )
    assert created.status_code == 201, created.text[:300]
    token = db.scalars(select(ApiToken).where(ApiToken.user_id == person.user.id)).one()
    assert token.expires_at is not None
    shown = browser.get("/account/tokens").text
    assert re.search(r"<th[^>]*>Expires</th>", shown)
    assert token.expires_at.strftime("%Y-%m-%d") in shown
    refused = browser.post(
        "/account/tokens",
        data={"name": "bad", "expires_in_days": "12", "csrf_token": csrf_from(shown)},
    )
    assert refused.status_code == 400
    assert "30, 90 or 365" in refused.text
