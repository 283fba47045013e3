"""Seeds the two teams and their people that the benchmarks measure against."""

from __future__ import annotations

import uuid

from sqlalchemy import Connection, text


def seed_teams_and_people(
    conn: Connection, *, per_team: int, password_hash: str = "x", admin_email: str = ""
) -> list[uuid.UUID]:
    """Two teams ('Studio North', 'Studio South') of `per_team` members each; returns team ids.

    People are person1..personN@bench.example; `admin_email`, if given, is an admin.
    """
    conn.execute(
        text(
            "INSERT INTO teams (id, name, created_at) VALUES "
            "(gen_random_uuid(), 'Studio North', now()), "
            "(gen_random_uuid(), 'Studio South', now())"
        )
    )
    teams = [r[0] for r in conn.execute(text("SELECT id FROM teams ORDER BY name"))]
    # Every team has its default project, as the studio's own team creation makes it.
    conn.execute(
        text(
            "INSERT INTO projects (id, team_id, name, is_default, created_at) "
            "SELECT gen_random_uuid(), id, 'General', true, now() FROM teams"
        )
    )
    conn.execute(
        text(
            "INSERT INTO users (id, email, name, password_hash, is_active, is_superuser, "
            "last_team_id, created_at) "
            "SELECT gen_random_uuid(), 'person' || g || '@bench.example', 'Person ' || g, "
            ":hash, true, false, (:teams)[1 + (g - 1) / :per_team], now() "
            "FROM generate_series(1, :people) AS g"
        ),
        {"hash": password_hash, "teams": teams, "per_team": per_team, "people": 2 * per_team},
    )
    conn.execute(
        text(
            "INSERT INTO memberships (user_id, team_id, role, created_at) "
            "SELECT id, last_team_id, CASE WHEN email = :admin "
            "THEN 'admin' ELSE 'member' END, now() FROM users"
        ),
        {"admin": admin_email},
    )
    return teams
