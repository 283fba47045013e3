"""An API token cannot change the account or the team: those routes need a browser session."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.auth.models import ApiToken, AuthSession, Invite, Membership, Role, Team, User
from app.auth.service import create_invite, start_session
from app.auth.tokens import issue_token
from app.security import verify_password
from tests.auth.support import csrf_from, login
from tests.factories import PASSWORD, make_person, make_team


@pytest.fixture
def admin_with_token(db: Session) -> tuple[User, Team, str, User]:
    """An admin of a team with an API token, a second member, and a live browser session."""
    team = make_team(db)
    admin = make_person(db, team=team, role=Role.ADMIN)
    other = make_person(db, team=team, role=Role.MEMBER)
    start_session(db, admin.user, team_id=team.id)
    issued = issue_token(db, user_id=admin.user.id, team_id=team.id, name="automation")
    # Commit (a savepoint of the test's transaction): a refused request rolls back to here.
    db.commit()
    return admin.user, team, issued.secret, other.user


def _state(db: Session, user: User, team: Team) -> tuple[object, ...]:
    db.expire_all()
    fresh = db.get(User, user.id)
    assert fresh is not None
    return (
        fresh.name,
        fresh.email,
        fresh.password_hash,
        fresh.last_team_id,
        tuple(
            sorted(
                (str(m.user_id), m.role)
                for m in db.scalars(select(Membership).where(Membership.team_id == team.id))
            )
        ),
        db.scalar(select(func.count()).select_from(Invite).where(Invite.team_id == team.id)),
        db.scalar(select(func.count()).select_from(Team)),
        db.scalar(select(func.count()).select_from(AuthSession)),
        db.scalar(select(func.count()).select_from(ApiToken).where(ApiToken.revoked_at.is_(None))),
    )


def test_token_callers_cannot_change_accounts_teams_or_members(
    db: Session,
    client_factory: Callable[..., TestClient],
    admin_with_token: tuple[User, Team, str, User],
) -> None:
    admin, team, secret, other = admin_with_token
    session_row = db.scalars(select(AuthSession).where(AuthSession.user_id == admin.id)).one()
    token_row = db.scalars(select(ApiToken).where(ApiToken.user_id == admin.id)).one()
    raw_invite, invite = create_invite(db, team_id=team.id, created_by=admin, role=Role.MEMBER)
    second_team = make_team(db)
    make_person(db, team=second_team, role=Role.ADMIN)
    db.commit()
    before = _state(db, admin, team)
    attempts: list[tuple[str, dict[str, str]]] = [
        ("/account/name", {"name": "Taken Over"}),
        (
            "/account/password",
            {
                "current_password": PASSWORD,
                "new_password": "attacker passphrase 123",
                "new_password_again": "attacker passphrase 123",
            },
        ),
        ("/account/email", {"email": "attacker@example.com", "current_password": PASSWORD}),
        ("/account/sessions/end-others", {}),
        (f"/account/sessions/{session_row.id}/end", {}),
        ("/teams/switch", {"team_id": str(second_team.id)}),
        ("/teams", {"name": "Attacker's team"}),
        (f"/team/members/{other.id}/role", {"role": "admin"}),
        (f"/team/members/{other.id}/remove", {}),
        ("/team/invites", {"email": "", "role": "admin"}),
        (f"/team/invites/{invite.id}/revoke", {}),
        ("/account/tokens", {"name": "successor"}),
        (f"/account/tokens/{token_row.id}/revoke", {}),
        (f"/invite/{raw_invite}", {}),
    ]
    client = client_factory()
    headers = {"Authorization": f"Bearer {secret}", "Accept": "application/json"}
    for path, data in attempts:
        response = client.post(path, data=data, headers=headers, follow_redirects=False)
        assert response.status_code == 403, (path, response.status_code, response.text[:300])
        assert response.json()["error"]["code"] == "session_required", path
    assert _state(db, admin, team) == before
    refreshed = db.get(User, admin.id)
    assert refreshed is not None and verify_password(refreshed.password_hash, PASSWORD)


def test_a_token_caller_gets_a_plain_refusal_page_in_html(
    db: Session,
    client_factory: Callable[..., TestClient],
    admin_with_token: tuple[User, Team, str, User],
) -> None:
    _, _, secret, _ = admin_with_token
    client = client_factory()
    response = client.post(
        "/account/name",
        data={"name": "Taken Over"},
        headers={"Authorization": f"Bearer {secret}"},
        follow_redirects=False,
    )
    assert response.status_code == 403
    assert "signed-in browser" in response.text


def test_browser_sessions_still_change_the_account(
    db: Session, client_factory: Callable[..., TestClient]
) -> None:
    person = make_person(db)
    client = client_factory()
    login(client, person.user.email, PASSWORD)
    token = csrf_from(client.get("/account").text)
    response = client.post(
        "/account/name", data={"name": "New Name", "csrf_token": token}, follow_redirects=False
    )
    assert response.status_code == 303
    db.expire_all()
    assert db.get(User, person.user.id).name == "New Name"  # type: ignore[union-attr]
