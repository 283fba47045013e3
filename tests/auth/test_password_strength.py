"""New passwords: 12+ characters, not common and not built from the account's own words,
judged by zxcvbn at every door that sets one, with zxcvbn's reason in the refusal."""

from __future__ import annotations

import html
import re
import uuid
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from app.auth.models import Role
from app.auth.service import AccountError, create_user, find_user_by_email
from app.cli import cli
from app.security import password_inputs, password_problem
from tests.auth.support import csrf_from, login
from tests.factories import PASSWORD, make_person

INPUTS = password_inputs("jane.doe@example.com", "Jane Doe", "Night Owls")


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ("aaaaaaaaaa", "at least 12 characters"),
        ("password12", "at least 12 characters"),
        ("1234567890", "at least 12 characters"),
        ("aaaaaaaaaaaa", 'Repeats like "aaa" are easy to guess'),
        ("password1234", "This is a very common password"),
        ("123456789012", "similar to a commonly used password"),
        ("qwertyuiop12", "too easy to guess"),
        ("jane.doe@example.com", "built from your email, your name or the team's name"),
        ("janedoe12345", "built from your email, your name or the team's name"),
        ("nightowls2026", "built from your email, your name or the team's name"),
        ("x" * 1025, "at most 1024 characters"),
    ],
)
def test_weak_passwords_are_refused_with_the_reason(password: str, reason: str) -> None:
    problem = password_problem(password, INPUTS)
    assert problem is not None and reason in problem


@pytest.mark.parametrize("password", [PASSWORD, "kLq9-vBnm2x!", "plum violet ferry nineteen"])
def test_strong_passwords_pass(password: str) -> None:
    assert password_problem(password, INPUTS) is None


def test_the_email_itself_is_refused_when_creating_an_account(db: Session) -> None:
    with pytest.raises(AccountError, match="built from your email") as refused:
        create_user(db, email="sam.river@example.com", name="Sam", password="sam.river@example.com")
    assert refused.value.field == "password"
    with pytest.raises(AccountError, match="built from your email"):
        create_user(
            db,
            email="kim@example.com",
            name="Kim",
            password="Blue Herons 2026",
            team_names=["Blue Herons"],
        )


def test_invite_acceptance_refuses_a_common_password(
    db: Session, client_factory: Callable[..., TestClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.auth.service import create_invite

    admin = make_person(db, role=Role.ADMIN)
    raw, _ = create_invite(db, team_id=admin.team.id, created_by=admin.user, role=Role.MEMBER)
    client = client_factory()
    page = client.get(f"/invite/{raw}")
    answer = client.post(
        f"/invite/{raw}",
        data={
            "name": "Weak",
            "email": "weak.one@example.com",
            "password": "password1234",
            "password_again": "password1234",
            "csrf_token": csrf_from(page.text),
        },
        follow_redirects=False,
    )
    assert answer.status_code == 400
    assert "This is a very common password" in html.unescape(answer.text)
    assert find_user_by_email(db, "weak.one@example.com") is None


def test_password_change_refuses_one_made_of_the_email(
    db: Session, client_factory: Callable[..., TestClient]
) -> None:
    person = make_person(db)
    client = client_factory()
    login(client, person.user.email, PASSWORD)
    weak = person.user.email.split("@")[0] + "!2026"
    token = csrf_from(client.get("/account").text)
    answer = client.post(
        "/account/password",
        data={
            "current_password": PASSWORD,
            "new_password": weak,
            "new_password_again": weak,
            "csrf_token": token,
        },
        follow_redirects=False,
    )
    assert answer.status_code == 400
    assert "too easy to guess" in html.unescape(answer.text)


def test_studio_users_create_refuses_a_weak_password_and_says_why() -> None:
    email = f"cli-{uuid.uuid4().hex[:8]}@example.com"
    result = CliRunner().invoke(
        cli, ["users", "create", email, "--team", "Cli Team", "--password", "1234567890ab"]
    )
    assert result.exit_code == 2
    assert re.search(r"too easy to guess|commonly used|at least 12", result.output)
