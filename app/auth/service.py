"""Business rules for people, teams and memberships."""

from __future__ import annotations

import uuid

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.auth.models import Membership, Role, Team, User
from app.security import hash_password, password_problem


class AccountError(ValueError):
    """A request about accounts that cannot be carried out; the message says what to change."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


def normalize_email(email: str) -> str:
    return email.strip()


def find_user_by_email(db: Session, email: str) -> User | None:
    stmt = select(User).where(func.lower(User.email) == normalize_email(email).lower())
    return db.scalars(stmt).first()


def create_team(db: Session, name: str) -> Team:
    name = name.strip()
    if not name:
        raise AccountError("team name is required", field="name")
    team = Team(name=name)
    db.add(team)
    db.flush()
    return team


def create_user(
    db: Session,
    *,
    email: str,
    name: str,
    password: str,
    is_superuser: bool = False,
) -> User:
    email = normalize_email(email)
    if "@" not in email or len(email) > 320:
        raise AccountError("enter an email address like name@example.com", field="email")
    problem = password_problem(password)
    if problem:
        raise AccountError(f"password: {problem}", field="password")
    if find_user_by_email(db, email) is not None:
        raise AccountError("an account with this email exists already", field="email")
    user = User(
        email=email,
        name=name.strip() or email.split("@")[0],
        password_hash=hash_password(password),
        is_superuser=is_superuser,
    )
    db.add(user)
    db.flush()
    return user


def add_member(db: Session, user: User, team: Team, role: Role = Role.MEMBER) -> Membership:
    membership = db.get(Membership, (user.id, team.id))
    if membership is None:
        membership = Membership(user_id=user.id, team_id=team.id, role=role.value)
        db.add(membership)
    else:
        membership.role = role.value
    if user.last_team_id is None:
        user.last_team_id = team.id
    db.flush()
    return membership


def membership_of(db: Session, user_id: uuid.UUID, team_id: uuid.UUID) -> Membership | None:
    return db.get(Membership, (user_id, team_id))


def user_count(db: Session) -> int:
    return db.scalar(select(func.count()).select_from(User)) or 0
