"""Audit entries are written with the change and can never be edited or deleted."""

from __future__ import annotations

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from app.audit.models import AuditEntry
from app.audit.service import record
from app.auth.models import Role
from tests.factories import make_person


def test_record_keeps_who_what_and_before_after(db: Session) -> None:
    manager = make_person(db, role=Role.MANAGER)
    entry = record(
        db,
        team_id=manager.team.id,
        actor_id=manager.user.id,
        actor_email=manager.user.email,
        action="budget.set",
        target_type="budget",
        target_id="team",
        before={"credits": None},
        after={"credits": 500, "role": Role.MEMBER},
    )
    stored = db.scalars(select(AuditEntry).where(AuditEntry.id == entry.id)).one()
    assert stored.actor_email == manager.user.email
    assert stored.before == {"credits": None}
    assert stored.after == {"credits": 500, "role": "member"}
    assert stored.at is not None


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_entries SET action = 'x' WHERE id = :id",
        "DELETE FROM audit_entries WHERE id = :id",
    ],
)
def test_the_database_refuses_edits_and_deletes(db: Session, statement: str) -> None:
    manager = make_person(db, role=Role.MANAGER)
    entry = record(
        db,
        team_id=manager.team.id,
        actor_id=manager.user.id,
        actor_email=manager.user.email,
        action="member.role_changed",
        target_type="user",
        target_id=manager.user.id,
    )
    with pytest.raises(DBAPIError, match="append-only"), db.begin_nested():
        db.execute(text(statement), {"id": entry.id})
