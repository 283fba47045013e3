"""The projects migration gives every existing team a default project and moves its jobs,
charges and holds into it, with the daily rollup built from the ledger."""

from __future__ import annotations

import uuid

from alembic import command
from sqlalchemy import Connection, create_engine, text

from tests.foundation.test_migrations import _config, scratch_url

__all__ = ["scratch_url"]

_TEAM = uuid.UUID("11111111-1111-1111-1111-111111111111")
_USER = uuid.UUID("22222222-2222-2222-2222-222222222222")
_JOB = uuid.UUID("33333333-3333-3333-3333-333333333333")


def _seed(conn: Connection) -> None:
    ids = {"team": _TEAM, "user": _USER, "job": _JOB}
    conn.execute(text("INSERT INTO teams (id, name) VALUES (:team, 'Old team')"), ids)
    conn.execute(
        text(
            "INSERT INTO users (id, email, name, password_hash, is_active, is_superuser) "
            "VALUES (:user, 'old@example.com', 'Old', 'x', true, false)"
        ),
        ids,
    )
    conn.execute(
        text("INSERT INTO memberships (user_id, team_id, role) VALUES (:user, :team, 'member')"),
        ids,
    )
    conn.execute(
        text(
            "INSERT INTO jobs (id, team_id, user_id, status, model, prompt, params, width, "
            "height, output_format, reference_count, batch_index, estimated_credits, "
            "poll_count, attempts, unfinished_polls, requeues) VALUES "
            "(:job, :team, :user, 'ready', 'flux-2-pro', 'p', '{}', 512, 512, "
            "'jpeg', 0, 0, 3, 0, 0, 0, 0)"
        ),
        ids,
    )
    conn.execute(
        text(
            "INSERT INTO charges (id, job_id, team_id, user_id, model, credits, usd, created_at) "
            "VALUES (gen_random_uuid(), :job, :team, :user, 'flux-2-pro', 3, 0.03, "
            "'2026-03-04 23:30:00+00')"
        ),
        ids,
    )


def test_existing_jobs_and_charges_move_into_their_teams_default_project(
    scratch_url: str,
) -> None:
    config = _config(scratch_url)
    command.upgrade(config, "0012")
    engine = create_engine(scratch_url)
    try:
        with engine.begin() as conn:
            _seed(conn)
        command.upgrade(config, "0013")
        with engine.connect() as conn:
            projects = conn.execute(
                text("SELECT id, name, is_default FROM projects WHERE team_id = :t"), {"t": _TEAM}
            ).all()
            assert [(p.name, p.is_default) for p in projects] == [("General", True)]
            general = projects[0].id
            assert conn.scalar(text("SELECT project_id FROM jobs")) == general
            assert conn.scalar(text("SELECT project_id FROM charges")) == general
            rollup = conn.execute(
                text("SELECT day, project_id, credits, charges FROM charge_days")
            ).one()
            assert (str(rollup.day), rollup.project_id, rollup.credits, rollup.charges) == (
                "2026-03-04",
                general,
                3,
                1,
            )
        command.downgrade(config, "0012")
        with engine.connect() as conn:
            assert conn.scalar(text("SELECT count(*) FROM jobs")) == 1
    finally:
        engine.dispose()
