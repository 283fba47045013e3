"""Fixtures for the audit tests: an app whose requests share the test's rolled-back session."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.audit.models import AuditEntry
from app.auth.service import start_session
from app.deps import get_db
from app.main import create_app
from app.settings import get_settings
from tests.factories import Person


@pytest.fixture
def client(db: Session, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv("PUBLIC_URL", "https://testserver")
    get_settings.cache_clear()
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
    monkeypatch.undo()
    get_settings.cache_clear()


@dataclass
class Browser:
    """A signed-in browser session of one person: its cookie and anti-forgery token."""

    client: TestClient
    cookie: str
    csrf: str

    def get(self, path: str, **params: str) -> object:
        return self.client.get(path, params=params, headers={"cookie": self.cookie})

    def post(self, path: str, data: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
        return self.client.post(
            path,
            data={**(data or {}), "csrf_token": self.csrf},
            headers={"cookie": self.cookie},
            follow_redirects=False,
        )


@pytest.fixture
def browser(db: Session, client: TestClient):  # type: ignore[no-untyped-def]
    from app.auth.deps import session_cookie_name

    def sign_in(person: Person) -> Browser:
        raw, session = start_session(db, person.user, team_id=person.team.id)
        db.commit()
        return Browser(client, f"{session_cookie_name()}={raw}", session.csrf_token)

    return sign_in


def entries(db: Session, action: str) -> list[AuditEntry]:
    """The entries of one action, oldest first."""
    db.expire_all()
    return list(
        db.scalars(select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.at))
    )
