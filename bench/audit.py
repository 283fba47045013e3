"""Audit log benchmark: the /audit page's queries and the export over 200,000 entries in 2 teams.

Creates a database of its own on the PostgreSQL server (DATABASE_URL, else 127.0.0.1),
migrates it, seeds entries over the last 365 days with INSERT ... SELECT generate_series, then
times the reads behind the page and the API (p50/p95 over repeated runs in one session): the
first page, a page 40,000 entries deep (keyset: as fast as the first), filtered pages, and
streaming a whole filtered export.

Run: `.venv/bin/python -m bench.audit` (`--entries`, `--runs`). Prints the figures and writes
bench/results/audit.json; the database is dropped.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from bench.costs import LOCAL_POSTGRES, _timed
from bench.people import seed_teams_and_people

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "audit.json"
ACTIONS = ("budget.set", "member.role_changed", "invite.created", "token.revoked", "job.deleted")


def _seed(url: str, entries: int) -> dict[str, Any]:
    engine = create_engine(url)
    actions = "ARRAY[" + ", ".join(f"'{a}'" for a in ACTIONS) + "]"
    with engine.begin() as conn:
        seed_teams_and_people(conn, per_team=10)
        conn.execute(
            text(
                f"""
                WITH people AS (
                    SELECT u.id, u.email, u.last_team_id AS team_id,
                           row_number() OVER (ORDER BY u.email) - 1 AS n
                    FROM users u
                )
                INSERT INTO audit_entries (id, team_id, actor_id, actor_email, at, action,
                                           target_type, target_id, before, after)
                SELECT gen_random_uuid(), p.team_id, p.id, p.email,
                       now() - make_interval(secs => g * (31536000.0 / :n)),
                       ({actions})[1 + g % {len(ACTIONS)}], 'user', 'target-' || (g % 997),
                       jsonb_build_object('value', g), jsonb_build_object('value', g + 1)
                FROM generate_series(1, :n) AS g JOIN people p ON p.n = g % 20
                """  # noqa: S608 - built from this module's constants only
            ),
            {"n": entries},
        )
        viewer = conn.execute(
            text("SELECT id, last_team_id FROM users WHERE email = 'person1@bench.example'")
        ).one()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))
    engine.dispose()
    return {"team_id": viewer[1], "user_id": viewer[0]}


def _deep_cursor(db: Session, team_id: uuid.UUID, depth: int) -> str:
    from app.audit.queries import AuditFilters, audit_page

    page = audit_page(db, team_id=team_id, filters=AuditFilters(), limit=depth)
    assert page.next_cursor is not None
    return page.next_cursor


def _figures(url: str, ids: dict[str, Any], runs: int, entries: int) -> dict[str, Any]:
    from app.audit.export import audit_csv
    from app.audit.queries import AuditFilters, audit_page, iter_entries

    engine = create_engine(url)
    team = ids["team_id"]
    figures: dict[str, Any] = {}
    with Session(engine) as db:
        deep = _deep_cursor(db, team, min(40_000, entries // 5))
        one_action = AuditFilters(action="budget.set")
        calls: dict[str, Callable[[], object]] = {
            "first_page": lambda: audit_page(db, team_id=team, filters=AuditFilters()),
            "page_40000_deep": lambda: audit_page(
                db, team_id=team, filters=AuditFilters(), after=deep
            ),
            "page_one_action": lambda: audit_page(db, team_id=team, filters=one_action),
            "page_one_person": lambda: audit_page(
                db, team_id=team, filters=AuditFilters(actor_id=ids["user_id"])
            ),
            "page_one_target": lambda: audit_page(
                db, team_id=team, filters=AuditFilters(target_id="target-5")
            ),
        }
        for label, call in calls.items():
            figures[label] = _timed(runs, call)
        rows = 0

        def export() -> None:
            nonlocal rows
            chunks = audit_csv(iter_entries(db, team_id=team, filters=one_action))
            rows = sum(chunk.count("\n") for chunk in chunks) - 1

        figures["csv_export_one_action"] = {**_timed(3, export), "rows": rows}
    engine.dispose()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()

    server = os.environ.get("DATABASE_URL") or LOCAL_POSTGRES
    server = server.replace("postgresql://", "postgresql+psycopg://", 1)
    name = f"studio_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(server).set(database=name).render_as_string(hide_password=False)
    try:
        from app.cli import migrate_database

        migrate_database(url)
        figures = _figures(url, _seed(url, args.entries), args.runs, args.entries)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    result = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "entries": args.entries,
        "runs": args.runs,
        "figures": figures,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    for label, numbers in figures.items():
        print(f"{label:24s} p50 {numbers['p50_ms']:8.2f} ms   p95 {numbers['p95_ms']:8.2f} ms")


if __name__ == "__main__":
    main()
