"""The migrations build exactly the schema the models describe, and undo it cleanly."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url

from app.models import metadata
from app.templating import ROOT


@pytest.fixture
def scratch_url() -> Iterator[str]:
    server = make_url(os.environ["DATABASE_URL"]).set(database="postgres")
    name = f"studio_mig_{uuid.uuid4().hex[:8]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _config(url: str) -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def test_upgrade_head_matches_models_and_downgrade_to_base(scratch_url: str) -> None:
    config = _config(scratch_url)
    command.upgrade(config, "head")
    engine = create_engine(scratch_url)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), metadata)
        assert diff == [], f"models and migrations differ: {diff}"
        tables = set(inspect(engine).get_table_names())
        assert {"jobs", "users", "teams", "charges", "budgets"} <= tables

        command.downgrade(config, "base")
        left = set(inspect(engine).get_table_names()) - {"alembic_version"}
        assert left == set(), f"downgrade left tables behind: {left}"

        # And back up again: the downgrade did not leave anything that blocks a re-run.
        command.upgrade(config, "head")
        assert "jobs" in inspect(engine).get_table_names()
    finally:
        engine.dispose()
