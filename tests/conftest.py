"""Test session wiring: a fresh database migrated to head per run, real Redis, shared fixtures."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from tests import services

RUN_ID = uuid.uuid4().hex[:10]
TEST_DB = f"studio_test_{RUN_ID}"
_admin_url: str | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _admin_url
    if os.environ.get("STUDIO_TEST_CONFIGURED") == RUN_ID:
        return
    _admin_url = services.postgres_server_url().replace("postgresql://", "postgresql+psycopg://", 1)
    admin = create_engine(_admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{TEST_DB}"'))
    admin.dispose()
    test_url = make_url(_admin_url).set(database=TEST_DB).render_as_string(hide_password=False)
    data_dir = Path(tempfile.mkdtemp(prefix="studio-test-data-"))
    os.environ.update(
        {
            "STUDIO_TEST_CONFIGURED": RUN_ID,
            "DATABASE_URL": test_url,
            "REDIS_URL": services.redis_url(),
            "CELERY_KEY_PREFIX": f"test-{RUN_ID}:",
            "DATA_DIR": str(data_dir),
            "SECRET_KEY": "test-secret-key-" + RUN_ID,
            "LOG_FORMAT": "json",
        }
    )
    for name in ("BFL_API_KEY", "PUBLIC_URL", "MEDIA_ROOT", "MEDIA_BACKEND", "METRICS_TOKEN"):
        os.environ.pop(name, None)
    from app.cli import migrate_database
    from app.settings import get_settings

    get_settings.cache_clear()
    migrate_database(test_url)


def pytest_unconfigure(config: pytest.Config) -> None:
    if _admin_url is None:
        return
    from app.db import get_engine

    get_engine().dispose()
    admin = create_engine(_admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{TEST_DB}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def engine() -> Engine:
    from app.db import get_engine

    return get_engine()


@pytest.fixture
def db(engine: Engine) -> Iterator[Session]:
    """A session inside a transaction that is rolled back after the test."""
    connection = engine.connect()
    outer = connection.begin()
    session = Session(bind=connection, join_transaction_mode="create_savepoint")
    try:
        yield session
    finally:
        session.close()
        outer.rollback()
        connection.close()


@pytest.fixture
def committed_db(engine: Engine) -> Iterator[Session]:
    """A session whose commits are real (other processes see them); tables are emptied after."""
    from app.db import Base

    session = Session(bind=engine, expire_on_commit=False)
    try:
        yield session
    finally:
        session.close()
        tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
        with engine.begin() as conn:
            conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
