"""Notices in the studio: the bell's count, the list, marking read (pages and API), and a new
charge having its team's budgets checked after the commit."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from decimal import Decimal

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app.alerts import EVALUATE_TEAM_TASK, pacing
from app.alerts.rules import fire
from app.auth.models import Role
from app.auth.service import start_session
from app.auth.tokens import issue_token
from app.db import utcnow
from app.deps import get_db
from app.jobs import messages, state
from app.jobs.models import JobStatus
from app.main import create_app
from tests.costs.factories import make_job
from tests.factories import Person, make_person


@pytest.fixture
def client(db: Session) -> Iterator[TestClient]:
    app = create_app()

    def shared_db() -> Iterator[Session]:
        try:
            yield db
            db.commit()
        except BaseException:
            db.rollback()
            raise

    app.dependency_overrides[get_db] = shared_db
    with TestClient(app, base_url="https://testserver") as test_client:
        yield test_client


def _alert(db: Session, person: Person, title: str) -> None:
    fire(
        db,
        team_id=person.team.id,
        kind="budget",
        scope_type="team",
        scope_id="",
        period=title,
        threshold=80,
        title=title,
        body=f"{title} body",
        details={},
        recipients=[person.user.id],
    )


def _cookie(db: Session, person: Person) -> tuple[dict[str, str], str]:
    from app.auth.deps import session_cookie_name

    raw, session = start_session(db, person.user, team_id=person.team.id)
    db.commit()
    return {"cookie": f"{session_cookie_name()}={raw}"}, session.csrf_token


def test_the_bell_counts_unread_and_the_list_marks_them_read(
    db: Session, client: TestClient
) -> None:
    manager = make_person(db, role=Role.MANAGER)
    teammate = make_person(db, manager.team, Role.MANAGER)
    _alert(db, manager, "Budget at 80%")
    _alert(db, manager, "Budget at 100%")
    _alert(db, teammate, "Not for the manager")
    headers, csrf = _cookie(db, manager)

    assert (
        '<span class="badge" aria-label="2 unread">2</span>'
        in client.get("/notices/badge", headers=headers).text
    )
    home = client.get("/", headers=headers).text
    assert 'hx-get="/notices/badge"' in home
    page = client.get("/notices", headers=headers).text
    assert "Budget at 100% body" in page and "Not for the manager" not in page

    secret = issue_token(db, user_id=manager.user.id, team_id=manager.team.id, name="n").secret
    db.commit()
    bearer = {"authorization": f"Bearer {secret}"}
    listed = client.get("/api/v1/notices", headers=bearer).json()
    assert [n["title"] for n in listed] == ["Budget at 100%", "Budget at 80%"]
    newest = listed[0]["id"]
    read = client.post(f"/api/v1/notices/{newest}/read", headers=bearer)
    assert read.status_code == 200 and read.json()["read_at"] is not None
    assert "1 unread" in client.get("/notices/badge", headers=headers).text
    assert client.post(f"/api/v1/notices/{uuid.uuid4()}/read", headers=bearer).status_code == 404

    answer = client.post(
        "/notices/read-all", data={"csrf_token": csrf}, headers=headers, follow_redirects=False
    )
    assert answer.status_code == 303
    assert "badge" not in client.get("/notices/badge", headers=headers).text
    # The teammate's notice is untouched, and not theirs to read for the manager.
    (theirs,) = _list(db, client, teammate)
    assert theirs["read_at"] is None
    refused = client.post(f"/api/v1/notices/{theirs['id']}/read", headers=bearer)
    assert refused.status_code == 404


def _list(db: Session, client: TestClient, person: Person) -> list[dict[str, object]]:
    secret = issue_token(db, user_id=person.user.id, team_id=person.team.id, name="t").secret
    db.commit()
    answer = client.get("/api/v1/notices", headers={"authorization": f"Bearer {secret}"})
    result: list[dict[str, object]] = answer.json()
    return result


def test_a_new_charge_has_the_teams_budgets_checked_after_commit(db: Session) -> None:
    person = make_person(db, role=Role.MANAGER)
    jobs = [make_job(db, person, status=JobStatus.SUBMITTING) for _ in range(3)]
    messages.discard_pending(db)

    def charge(job_id: uuid.UUID) -> list[messages.Message]:
        assert state.mark_pending(
            db,
            job_id,
            bfl_task_id=f"bfl-{job_id}",
            polling_url="https://api.bfl.ai/x",
            cost_credits=Decimal("3"),
            next_poll_at=utcnow(),
        )
        sent = [m for m in messages.pending_messages(db) if m.task == EVALUATE_TEAM_TASK]
        messages.discard_pending(db)
        return sent

    # The first charge sends one check, due when its window closes ...
    (first,) = charge(jobs[0].id)
    assert first.args == (str(person.team.id),)
    assert first.countdown == pytest.approx(pacing.BUDGET_CHECK_WINDOW_S)
    # ... and a charge inside that window rides on it: no second task per job.
    assert charge(jobs[1].id) == []
    # Once the window has closed, the next charge opens another one.
    time.sleep(pacing.BUDGET_CHECK_WINDOW_S + 0.1)
    (third,) = charge(jobs[2].id)
    assert third.countdown == pytest.approx(pacing.BUDGET_CHECK_WINDOW_S)
