"""Fixtures for the accounts tests: an app whose requests share the test's rolled-back session."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app.deps import get_db
from app.main import create_app
from app.settings import get_settings

_addresses = itertools.count(1)


@pytest.fixture
def client_factory(db: Session) -> Iterator[Callable[..., TestClient]]:
    app = create_app()

    def shared_db() -> Iterator[Session]:
        # Like app.deps.get_db, but the "commit" only releases a savepoint of the test's
        # transaction, so nothing outlives the test.
        try:
            yield db
            db.commit()
        except BaseException:
            db.rollback()
            raise

    app.dependency_overrides[get_db] = shared_db
    clients: list[TestClient] = []

    def make(address: str | None = None) -> TestClient:
        # Each client gets its own address, so per-address throttling in one test never
        # spills into another.
        host = address or f"198.51.100.{next(_addresses) % 250 + 1}"
        client = TestClient(app, base_url="https://testserver", client=(host, 50000))
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def client(client_factory: Callable[..., TestClient]) -> TestClient:
    return client_factory()


@pytest.fixture(autouse=True)
def _public_url(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Invite links are built from PUBLIC_URL (never from the Host header)."""
    monkeypatch.setenv("PUBLIC_URL", "https://testserver")
    get_settings.cache_clear()
    yield
    monkeypatch.undo()
    get_settings.cache_clear()


@pytest.fixture(autouse=True)
def _forget_login_failures() -> Iterator[None]:
    """Delete this run's throttle counters (only keys under the run's own prefix)."""
    yield
    settings = get_settings()
    r = redis.Redis.from_url(settings.redis_url)
    try:
        keys = list(r.scan_iter(match=f"{settings.CELERY_KEY_PREFIX}studio:login:*", count=500))
        if keys:
            r.delete(*keys)
    finally:
        r.close()
