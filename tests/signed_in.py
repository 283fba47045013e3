"""Fixture: a real app client signed in as a factory-made person (session from the auth service)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app.auth.deps import session_cookie_name
from app.auth.service import start_session
from tests.factories import Person

SignIn = Callable[[Person], TestClient]


@pytest.fixture
def sign_in(committed_db: Session) -> Iterator[SignIn]:
    """Returns a function that opens a browser-like client signed in as a person."""
    from app.main import app

    clients: list[TestClient] = []

    def open_as(person: Person) -> TestClient:
        raw, session = start_session(committed_db, person.user, team_id=person.team.id)
        committed_db.commit()
        # https, so the __Host- Secure session cookie is sent as a browser would send it.
        client = TestClient(app, base_url="https://testserver", follow_redirects=False)
        client.cookies.set(session_cookie_name(), raw)
        client.headers["x-csrf-token"] = session.csrf_token
        client.__enter__()
        clients.append(client)
        return client

    yield open_as
    for client in clients:
        client.__exit__(None, None, None)
