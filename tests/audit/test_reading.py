"""Reading the audit log: filters, keyset pages, CSV and JSON exports, role and team walls,
and no way to change or delete an entry through the studio."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from datetime import datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app.audit.models import AuditEntry
from app.audit.queries import AuditFilters, audit_page
from app.auth.deps import session_cookie_name
from app.auth.models import Role
from app.auth.service import start_session
from app.auth.tokens import issue_token
from app.db import utcnow
from app.main import create_app
from tests.audit.conftest import Browser
from tests.factories import Person, make_person

SignIn = Callable[..., Browser]


def _entry(
    db: Session,
    who: Person,
    action: str,
    target: str,
    days_ago: int = 0,
    at: datetime | None = None,
) -> AuditEntry:
    # Inserted dated (the trigger refuses UPDATE, INSERT is how entries are written).
    entry = AuditEntry(
        team_id=who.team.id,
        actor_id=who.user.id,
        actor_email=who.user.email,
        at=at or utcnow() - timedelta(days=days_ago, seconds=1),
        action=action,
        target_type=target,
        target_id=f"{target}-{action}",
        after={"n": days_ago},
    )
    db.add(entry)
    db.flush()
    return entry


def _build_team(db: Session) -> tuple[Person, Person, Person]:
    admin = make_person(db, role=Role.ADMIN)
    manager = make_person(db, admin.team, Role.MANAGER)
    member = make_person(db, admin.team)
    _entry(db, admin, "member.role_changed", "user", days_ago=10)
    _entry(db, admin, "invite.created", "invite", days_ago=5)
    _entry(db, manager, "budget.set", "budget", days_ago=2)
    _entry(db, manager, "budget.removed", "budget")
    other = make_person(db, role=Role.ADMIN)
    _entry(db, other, "budget.set", "budget")
    db.commit()
    return admin, manager, member


@pytest.fixture
def team(db: Session) -> tuple[Person, Person, Person]:
    return _build_team(db)


def test_filters_by_person_action_target_and_dates(
    db: Session, team: tuple[Person, Person, Person]
) -> None:
    admin, manager, _ = team
    team_id = admin.team.id

    def actions(filters: AuditFilters) -> list[str]:
        return [e.action for e in audit_page(db, team_id=team_id, filters=filters).items]

    assert actions(AuditFilters()) == [
        "budget.removed",
        "budget.set",
        "invite.created",
        "member.role_changed",
    ]
    assert actions(AuditFilters(actor_id=admin.user.id)) == [
        "invite.created",
        "member.role_changed",
    ]
    assert actions(AuditFilters(action="budget.set")) == ["budget.set"]
    assert actions(AuditFilters(target_type="budget")) == ["budget.removed", "budget.set"]
    assert actions(AuditFilters(target_id="invite-invite.created")) == ["invite.created"]
    today = utcnow().date()
    week = AuditFilters(start=today - timedelta(days=6), end=today - timedelta(days=1))
    assert actions(week) == ["budget.set", "invite.created"]
    assert actions(AuditFilters(actor_id=manager.user.id, end=today - timedelta(days=3))) == []


def test_keyset_pages_cover_every_entry_once(db: Session, browser: SignIn) -> None:
    admin = make_person(db, role=Role.ADMIN)
    for n in range(7):
        _entry(db, admin, f"test.step{n}", "team")
    same = utcnow()
    for n in range(7, 10):
        # Entries of the same microsecond are ordered by id: none is skipped or repeated.
        _entry(db, admin, f"test.step{n}", "team", at=same)
    db.commit()
    seen: list[str] = []
    after = None
    while True:
        page = audit_page(db, team_id=admin.team.id, filters=AuditFilters(), after=after, limit=3)
        seen += [e.action for e in page.items]
        if page.next_cursor is None:
            break
        after = page.next_cursor
    assert sorted(seen) == [f"test.step{n}" for n in range(10)] and len(set(seen)) == 10
    # The page follows the same cursor.
    signed_in = browser(admin)
    first = signed_in.get("/api/v1/audit").json()  # type: ignore[attr-defined]
    assert len(first["items"]) == 10 and first["next_cursor"] is None


def test_api_page_and_its_refusals(
    db: Session, client: TestClient, team: tuple[Person, Person, Person]
) -> None:
    _admin, manager, member = team
    secret = issue_token(db, user_id=manager.user.id, team_id=manager.team.id, name="t").secret
    db.commit()
    auth = {"authorization": f"Bearer {secret}"}
    body = client.get("/api/v1/audit", params={"action": "budget.set"}, headers=auth).json()
    assert [e["actor_email"] for e in body["items"]] == [manager.user.email]
    assert set(body["items"][0]) == {
        "id", "at", "actor_id", "actor_email", "action", "target_type", "target_id",
        "before", "after",
    }  # fmt: skip
    bad = client.get(
        "/api/v1/audit", params={"start": "2026-05-02", "end": "2026-05-01"}, headers=auth
    )
    assert bad.status_code == 422 and bad.json()["error"]["fields"][0]["field"] == "end"
    damaged = client.get("/api/v1/audit", params={"after": "nonsense"}, headers=auth)
    assert damaged.status_code == 422 and "after" in damaged.text
    wrong = client.get("/api/v1/audit", params={"person": "not-an-id"}, headers=auth)
    assert wrong.status_code == 422 and "person" in wrong.text
    member_secret = issue_token(db, user_id=member.user.id, team_id=member.team.id, name="m")
    db.commit()
    refused = client.get(
        "/api/v1/audit", headers={"authorization": f"Bearer {member_secret.secret}"}
    )
    assert refused.status_code == 403


def test_exports_stream_the_filtered_log_as_csv_and_json(committed_db: Session) -> None:
    # Exports read from a session of their own, so this test's rows are really committed.
    admin, manager, _ = _build_team(committed_db)
    raw, _ = start_session(committed_db, manager.user, team_id=manager.team.id)
    committed_db.commit()
    cookie = {"cookie": f"{session_cookie_name()}={raw}"}
    with TestClient(create_app(), base_url="https://testserver") as client:
        answer = client.get("/audit/export.csv", params={"target_type": "budget"}, headers=cookie)
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/csv")
        assert "attachment" in answer.headers["content-disposition"]
        rows = list(csv.DictReader(io.StringIO(answer.text)))
        assert [r["action"] for r in rows] == ["budget.removed", "budget.set"]
        assert {r["actor_email"] for r in rows} == {manager.user.email}
        assert json.loads(rows[1]["after"]) == {"n": 2}
        answer = client.get(
            "/api/v1/audit/export.json", params={"person": str(admin.user.id)}, headers=cookie
        )
        assert [e["action"] for e in answer.json()] == ["invite.created", "member.role_changed"]
        every = client.get("/audit/export.json", headers=cookie).json()
        assert len(every) == 4  # the other team's entry is not there


def test_the_page_shows_the_team_log_to_managers_only(
    db: Session, browser: SignIn, team: tuple[Person, Person, Person]
) -> None:
    admin, manager, member = team
    page = browser(manager).get("/audit", action="budget.set")
    assert page.status_code == 200  # type: ignore[attr-defined]
    html = page.text  # type: ignore[attr-defined]
    assert "budget.set" in html and manager.user.email in html
    assert "invite-invite.created" not in html
    assert 'href="/audit"' in browser(admin).get("/").text  # type: ignore[attr-defined]
    for path in ("/audit", "/audit/export.csv", "/audit/export.json", "/api/v1/audit"):
        assert browser(member).get(path).status_code == 403, path  # type: ignore[attr-defined]
    assert 'href="/audit"' not in browser(member).get("/").text  # type: ignore[attr-defined]


def test_no_route_changes_or_deletes_an_entry(client: TestClient) -> None:
    for route in client.app.routes:  # type: ignore[attr-defined]
        path = getattr(route, "path", "")
        if "audit" in path:
            assert getattr(route, "methods", set()) <= {"GET", "HEAD"}, path
