"""Teams: switching, roles, the team page, and walls between teams."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app.auth.models import AuthSession, Membership, Role, Team, User
from app.auth.service import add_member, membership_of
from app.security import token_hash
from tests.auth.support import csrf_from, login
from tests.factories import PASSWORD, Person, make_person, make_team

COOKIE = "__Host-studio_session"


def _as(client_factory: Callable[..., TestClient], person: Person) -> TestClient:
    client = client_factory()
    login(client, person.user.email, PASSWORD)
    return client


def _post(client: TestClient, path: str, data: dict[str, str] | None = None):
    token = csrf_from(client.get("/account").text)
    return client.post(path, data={**(data or {}), "csrf_token": token}, follow_redirects=False)


def _session(db: Session, client: TestClient) -> AuthSession:
    session = db.get(AuthSession, token_hash(client.cookies.get(COOKIE) or ""))
    assert session is not None
    db.refresh(session)
    return session


def test_switch_to_another_of_my_teams(
    db: Session, client_factory: Callable[..., TestClient]
) -> None:
    person = make_person(db)
    second = make_team(db, "Second team")
    add_member(db, person.user, second, Role.MANAGER)
    client = _as(client_factory, person)
    assert _session(db, client).team_id == person.team.id
    response = _post(client, "/teams/switch", {"team_id": str(second.id), "next": "/account"})
    assert response.status_code == 303
    assert response.headers["location"].startswith("/account")
    assert _session(db, client).team_id == second.id
    db.refresh(person.user)
    assert person.user.last_team_id == second.id
    assert "Second team</strong> as <strong>manager" in client.get("/account").text
    # The next sign-in resumes in the team last used.
    again = _as(client_factory, person)
    assert _session(db, again).team_id == second.id


def test_cannot_switch_to_a_team_i_am_not_in(
    db: Session, client_factory: Callable[..., TestClient]
) -> None:
    person = make_person(db)
    foreign = make_team(db, "Not mine")
    client = _as(client_factory, person)
    for team_id in (str(foreign.id), str(uuid.uuid4()), "not-a-uuid"):
        assert _post(client, "/teams/switch", {"team_id": team_id}).status_code == 404
    assert _session(db, client).team_id == person.team.id


def test_only_admins_may_see_or_change_the_team(
    db: Session, client_factory: Callable[..., TestClient]
) -> None:
    admin = make_person(db, role=Role.ADMIN)
    member = make_person(db, team=admin.team, role=Role.MEMBER)
    manager = make_person(db, team=admin.team, role=Role.MANAGER)
    assert _as(client_factory, admin).get("/team").status_code == 200
    for person in (member, manager):
        client = _as(client_factory, person)
        page = client.get("/team")
        assert page.status_code == 403
        assert "Only an admin of this team can manage its members" in page.text
        changes = [
            ("/team/invites", {"role": "admin"}),
            (f"/team/members/{admin.user.id}/role", {"role": "member"}),
            (f"/team/members/{admin.user.id}/remove", {}),
            ("/teams", {"name": "Mine now"}),
        ]
        for path, data in changes:
            assert _post(client, path, data).status_code == 403, path
    db.refresh(membership_of(db, user_id=admin.user.id, team_id=admin.team.id))
    assert membership_of(db, user_id=admin.user.id, team_id=admin.team.id).role == "admin"  # type: ignore[union-attr]


def test_admin_changes_a_role_and_removes_a_member(
    db: Session, client_factory: Callable[..., TestClient]
) -> None:
    admin = make_person(db, role=Role.ADMIN)
    member = make_person(db, team=admin.team)
    member_client = _as(client_factory, member)
    client = _as(client_factory, admin)
    page = client.get("/team")
    assert member.user.email in page.text
    assert (
        _post(client, f"/team/members/{member.user.id}/role", {"role": "manager"}).status_code
        == 303
    )
    assert membership_of(db, user_id=member.user.id, team_id=admin.team.id).role == "manager"  # type: ignore[union-attr]
    bad = _post(client, f"/team/members/{member.user.id}/role", {"role": "owner"})
    assert bad.status_code == 400 and "choose member, manager or admin" in bad.text
    assert _post(client, f"/team/members/{member.user.id}/remove").status_code == 303
    assert membership_of(db, user_id=member.user.id, team_id=admin.team.id) is None
    # The removed person's browser is out of the team at once.
    assert member_client.get("/account", follow_redirects=False).status_code == 303


def test_the_last_admin_cannot_be_demoted_or_removed(
    db: Session, client_factory: Callable[..., TestClient]
) -> None:
    admin = make_person(db, role=Role.ADMIN)
    client = _as(client_factory, admin)
    demote = _post(client, f"/team/members/{admin.user.id}/role", {"role": "member"})
    assert demote.status_code == 409 and "at least one admin" in demote.text
    remove = _post(client, f"/team/members/{admin.user.id}/remove")
    assert remove.status_code == 409 and "last admin" in remove.text
    assert membership_of(db, user_id=admin.user.id, team_id=admin.team.id).role == "admin"  # type: ignore[union-attr]
    # With a second admin, stepping down is fine.
    make_person(db, team=admin.team, role=Role.ADMIN)
    assert (
        _post(client, f"/team/members/{admin.user.id}/role", {"role": "member"}).status_code == 303
    )


def test_admin_creates_a_team_and_works_in_it(
    db: Session, client_factory: Callable[..., TestClient]
) -> None:
    admin = make_person(db, role=Role.ADMIN)
    client = _as(client_factory, admin)
    assert _post(client, "/teams", {"name": "   "}).status_code == 400
    assert _post(client, "/teams", {"name": "Night shift"}).status_code == 303
    session = _session(db, client)
    team = db.get(Team, session.team_id)
    assert team is not None and team.name == "Night shift"
    assert membership_of(db, user_id=admin.user.id, team_id=team.id).role == "admin"  # type: ignore[union-attr]
    # The original team is still theirs.
    assert membership_of(db, user_id=admin.user.id, team_id=admin.team.id) is not None


def test_team_b_admin_gets_404_for_team_a_people_and_invites(
    db: Session, client_factory: Callable[..., TestClient]
) -> None:
    a_admin = make_person(db, role=Role.ADMIN)
    a_member = make_person(db, team=a_admin.team)
    b_admin = make_person(db, role=Role.ADMIN)
    a_client = _as(client_factory, a_admin)
    a_client_page = _post(a_client, "/team/invites", {"role": "member"})
    assert a_client_page.status_code == 201
    from app.auth.service import open_invites

    a_invite = open_invites(db, a_admin.team.id)[0]
    b_client = _as(client_factory, b_admin)
    replays = [
        (f"/team/members/{a_member.user.id}/role", {"role": "admin"}),
        (f"/team/members/{a_member.user.id}/remove", {}),
        (f"/team/members/{a_admin.user.id}/role", {"role": "member"}),
        (f"/team/invites/{a_invite.id}/revoke", {}),
    ]
    for path, data in replays:
        assert _post(b_client, path, data).status_code == 404, path
    assert membership_of(db, user_id=a_member.user.id, team_id=a_admin.team.id).role == "member"  # type: ignore[union-attr]
    assert open_invites(db, a_admin.team.id) == [a_invite]
    assert a_member.user.email not in b_client.get("/team").text


def test_a_user_with_no_team_left_is_told_so_at_sign_in(
    db: Session, client_factory: Callable[..., TestClient]
) -> None:
    person = make_person(db)
    db.delete(db.get(Membership, (person.user.id, person.team.id)))
    db.flush()
    client = client_factory()
    token = csrf_from(client.get("/login").text)
    response = client.post(
        "/login",
        data={"email": person.user.email, "password": PASSWORD, "csrf_token": token},
        follow_redirects=False,
    )
    assert response.status_code == 403
    assert "not in any team" in response.text
    assert COOKIE not in client.cookies


def test_inactive_account_cannot_sign_in(
    db: Session, client_factory: Callable[..., TestClient]
) -> None:
    person = make_person(db)
    user = db.get(User, person.user.id)
    assert user is not None
    user.is_active = False
    db.flush()
    client = client_factory()
    token = csrf_from(client.get("/login").text)
    response = client.post(
        "/login",
        data={"email": person.user.email, "password": PASSWORD, "csrf_token": token},
        follow_redirects=False,
    )
    assert response.status_code == 400
    assert "The email or password is wrong." in response.text
