"""Factories that build rows for tests through the same services the studio uses."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from sqlalchemy.orm import Session

from app.auth.models import Role, Team, User
from app.auth.service import add_member, create_team, create_user

PASSWORD = "correct horse battery"
_counter = itertools.count(1)


@dataclass
class Person:
    user: User
    team: Team
    role: Role
    password: str = PASSWORD


def make_team(db: Session, name: str | None = None) -> Team:
    return create_team(db, name or f"Team {next(_counter)}")


def make_person(
    db: Session, team: Team | None = None, role: Role = Role.MEMBER, email: str | None = None
) -> Person:
    team = team or make_team(db)
    n = next(_counter)
    user = create_user(
        db, email=email or f"person{n}@example.com", name=f"Person {n}", password=PASSWORD
    )
    add_member(db, user, team, role)
    return Person(user=user, team=team, role=role)
