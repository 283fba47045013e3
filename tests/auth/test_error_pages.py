"""Error pages keep the normal layout and nav for signed-in people; the API keeps its shape.

These run against the real app and its real request sessions (not a shared test session):
error pages are rendered after the request's database session has been rolled back and
closed, which is exactly when reading the caller's rows used to fail.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app.auth.deps import session_cookie_name
from app.auth.models import Role
from app.auth.service import start_session
from app.auth.tokens import issue_token
from app.main import create_app
from tests.factories import Person, make_person, make_team


@pytest.fixture
def browser() -> Iterator[TestClient]:
    with TestClient(create_app(), base_url="https://testserver", follow_redirects=False) as c:
        yield c


@pytest.fixture
def member(committed_db: Session) -> Person:
    team = make_team(committed_db, name="Harbour & Co")
    person = make_person(committed_db, team=team, role=Role.MEMBER)
    person.user.name = "Ada O'Neill"
    committed_db.commit()
    return person


def _sign_in(db: Session, client: TestClient, person: Person) -> str:
    raw, session = start_session(db, person.user, team_id=person.team.id)
    db.commit()
    client.cookies.set(session_cookie_name(), raw)
    return session.csrf_token


def _assert_nav_for(page: str, csrf_token: str) -> None:
    assert 'class="nav-account"' in page
    # Autoescaped, as everywhere else: the name and team appear as HTML text.
    assert "Ada O&#39;Neill · Harbour &amp; Co" in page
    assert 'href="/gallery"' in page
    # htmx requests from the error page still carry the anti-forgery token.
    assert csrf_token in page
    # A member sees no admin link.
    assert 'href="/ops"' not in page


@pytest.mark.parametrize(
    ("path", "status", "heading"),
    [
        (f"/gallery/{uuid.uuid4()}", 404, "Not found"),  # raised in the route
        (f"/jobs/{uuid.uuid4()}/card", 404, "Not found"),
        ("/gallery/not-a-uuid", 404, "Not found"),
        ("/team", 403, "Not allowed"),  # role check inside the route
        ("/ops", 403, "Not allowed"),  # role check in a dependency
        ("/no/such/page", 404, "Not found"),  # no route at all: routing's own 404
    ],
)
def test_error_pages_show_the_normal_nav_to_a_signed_in_person(
    committed_db: Session,
    browser: TestClient,
    member: Person,
    path: str,
    status: int,
    heading: str,
) -> None:
    csrf = _sign_in(committed_db, browser, member)
    response = browser.get(path)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert f"<h1>{heading}</h1>" in response.text
    if path != "/no/such/page":
        _assert_nav_for(response.text, csrf)


def test_an_admin_sees_the_ops_link_on_error_pages(
    committed_db: Session, browser: TestClient
) -> None:
    admin = make_person(committed_db, role=Role.ADMIN)
    committed_db.commit()
    _sign_in(committed_db, browser, admin)
    response = browser.get(f"/gallery/{uuid.uuid4()}")
    assert response.status_code == 404
    assert 'href="/ops"' in response.text and admin.user.name in response.text


def test_error_pages_for_signed_out_visitors_have_no_nav(browser: TestClient) -> None:
    response = browser.get("/no/such/page")
    assert response.status_code == 404
    assert 'class="nav-account"' not in response.text


def test_api_errors_keep_the_json_shape(
    committed_db: Session, browser: TestClient, member: Person
) -> None:
    issued = issue_token(
        committed_db, user_id=member.user.id, team_id=member.team.id, name="error tests"
    )
    committed_db.commit()
    headers = {"Authorization": f"Bearer {issued.secret}"}

    missing = browser.get(f"/api/v1/jobs/{uuid.uuid4()}", headers=headers)
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("application/json")
    assert set(missing.json()) == {"error"}
    assert missing.json()["error"]["code"] == "not_found"

    refused = browser.get("/api/v1/costs/budgets", headers=headers)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "forbidden"
    assert refused.json()["error"]["fields"] == []
