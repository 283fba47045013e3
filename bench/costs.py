"""Cost dashboard benchmark: the dashboard's queries over 200,000 charges in 2 teams.

With `--charges 200000 --days 29` every charge falls in this month: 100,000 per team, spread
over 6 projects, the load the dashboard and the cost review are held to (p95 < 100 ms).

Creates a database of its own on the PostgreSQL server (DATABASE_URL, else 127.0.0.1),
migrates it, seeds jobs and their ledger rows over the last 90 days with INSERT ... SELECT
generate_series, then times the service calls behind the pages (p50/p95 over repeated runs in
one session) and prints the plan of the monthly team total, so index use is visible.

Run: `.venv/bin/python -m bench.costs` (`--charges`, `--runs`, `--days`). Prints the figures
and writes bench/results/costs.json; the database is dropped.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from app.jobs.models import JobStatus
from bench.people import seed_teams_and_people

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "costs.json"
PLANS = ROOT / "bench" / "plans" / "after"
LOCAL_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
PEOPLE_PER_TEAM = 10
PROJECTS_PER_TEAM = 6
MODELS = ("flux-2-pro", "flux-2-flex", "flux-2-max", "flux-2-klein-4b", "flux-kontext-pro")


def _seed(url: str, charges: int, days: float) -> dict[str, Any]:
    engine = create_engine(url)
    models = "ARRAY[" + ", ".join(f"'{m}'" for m in MODELS) + "]"
    with engine.begin() as conn:
        seed_teams_and_people(conn, per_team=PEOPLE_PER_TEAM)
        # Each team's default project and PROJECTS_PER_TEAM - 1 more; jobs cycle through them.
        conn.execute(
            text(
                "INSERT INTO projects (id, team_id, name, is_default, created_at) "
                "SELECT gen_random_uuid(), t.id, 'Client ' || g, false, now() "
                "FROM teams t, generate_series(1, :more) AS g"
            ),
            {"more": PROJECTS_PER_TEAM - 1},
        )
        # One job every ~39 s back over 90 days; statuses, models and prompts cycle.
        conn.execute(
            text(
                f"""
                WITH people AS (
                    SELECT u.id AS user_id, u.last_team_id AS team_id,
                           row_number() OVER (PARTITION BY u.last_team_id ORDER BY u.email) - 1
                               AS n,
                           dense_rank() OVER (ORDER BY u.last_team_id) - 1 AS team_n
                    FROM users u
                ), series AS (
                    SELECT g, now() - make_interval(secs => g * (:span / :n)) AS at,
                           'prompt number ' || (g % 5000) AS prompt,
                           ({models})[1 + (g / 5) % {len(MODELS)}] AS model,
                           CASE WHEN g % 50 = 0 THEN :failed
                                WHEN g % 37 = 0 THEN :moderated ELSE :ready END AS status
                    FROM generate_series(1, :n) AS g
                )
                INSERT INTO jobs (
                    id, team_id, user_id, status, model, prompt, params, width, height, seed,
                    output_format, reference_count, batch_index, estimated_credits,
                    cost_credits, poll_count, attempts, requeues, unfinished_polls, bfl_task_id,
                    created_at, project_id)
                SELECT gen_random_uuid(), p.team_id, p.user_id, s.status, s.model, s.prompt,
                       '{{}}'::jsonb, 1024, 1024, s.g, 'jpeg', 0, 0, 3, 3 + (s.g % 4), 4, 1, 0,
                       0,
                       'task-' || s.g, s.at,
                       (SELECT id FROM projects WHERE team_id = p.team_id
                        ORDER BY name OFFSET s.g % {PROJECTS_PER_TEAM} LIMIT 1)
                FROM series s
                JOIN people p ON p.team_n = s.g % 2 AND p.n = (s.g / 2) % {PEOPLE_PER_TEAM}
                """  # noqa: S608 - built from this module's constants only
            ),
            {
                "n": charges,
                "span": days * 86400.0,
                "failed": JobStatus.FAILED.value,
                "moderated": JobStatus.MODERATED.value,
                "ready": JobStatus.READY.value,
            },
        )
        conn.execute(
            text(
                "INSERT INTO charges (id, job_id, team_id, user_id, project_id, model, credits, "
                "usd, created_at) SELECT gen_random_uuid(), id, team_id, user_id, project_id, "
                "model, cost_credits, cost_credits * 0.01, created_at + interval '1 second' "
                "FROM jobs"
            )
        )
        # The daily rollup the studio keeps with every ledger row, built as the migration does.
        conn.execute(
            text(
                "INSERT INTO charge_days (team_id, day, project_id, user_id, model, credits, "
                "charges) SELECT team_id, (created_at AT TIME ZONE 'UTC')::date, project_id, "
                "user_id, model, sum(credits), count(*) FROM charges GROUP BY 1, 2, 3, 4, 5"
            )
        )
        # The outcome and prompt rollups, built as migration 0021 does.
        conn.execute(
            text(
                "INSERT INTO charge_outcomes (team_id, day, project_id, user_id, model, status, "
                "credits, charges) SELECT c.team_id, (c.created_at AT TIME ZONE 'UTC')::date, "
                "c.project_id, c.user_id, c.model, j.status, sum(c.credits), count(*) "
                "FROM charges c JOIN jobs j ON j.id = c.job_id GROUP BY 1, 2, 3, 4, 5, 6"
            )
        )
        conn.execute(
            text(
                "INSERT INTO charge_prompt_months (team_id, month, project_id, user_id, "
                "prompt_md5, prompt, credits, charges, last_charged_at) "
                "SELECT c.team_id, date_trunc('month', c.created_at AT TIME ZONE 'UTC')::date, "
                "c.project_id, c.user_id, md5(j.prompt), min(j.prompt), sum(c.credits), "
                "count(*), max(c.created_at) FROM charges c JOIN jobs j ON j.id = c.job_id "
                "GROUP BY 1, 2, 3, 4, 5"
            )
        )
        conn.execute(
            text(
                "INSERT INTO budgets (id, team_id, user_id, monthly_credits, created_at) "
                "SELECT gen_random_uuid(), last_team_id, id, 100000, now() FROM users"
            )
        )
        conn.execute(
            text(
                "INSERT INTO budgets (id, team_id, project_id, monthly_credits, created_at) "
                "SELECT gen_random_uuid(), team_id, id, 200000, now() FROM projects"
            )
        )
        conn.execute(
            text(
                "INSERT INTO budgets (id, team_id, user_id, monthly_credits, created_at) "
                "SELECT gen_random_uuid(), id, NULL, 1000000, now() FROM teams"
            )
        )
        conn.execute(
            text("INSERT INTO credit_balances (credits, checked_at) VALUES (50000, now())")
        )
        viewer = conn.execute(
            text("SELECT id, last_team_id FROM users WHERE email = 'person1@bench.example'")
        ).one()
        project = conn.scalar(
            text("SELECT id FROM projects WHERE team_id = :t AND NOT is_default LIMIT 1"),
            {"t": viewer[1]},
        )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))
    engine.dispose()
    return {"team_id": viewer[1], "user_id": viewer[0], "project_id": project}


def _timed(runs: int, call: Callable[[], object]) -> dict[str, float]:
    call()  # warm the caches and the plan
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return {
        "p50_ms": round(statistics.median(samples), 2),
        "p95_ms": round(samples[max(0, int(len(samples) * 0.95) - 1)], 2),
    }


def _write_plans(db: Session, label: str, call: Callable[[], object]) -> None:
    """EXPLAIN ANALYZE every statement `call` runs, into bench/plans/after/costs_<label>.txt."""
    captured: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, params: Any, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            captured.append((statement, params))

    engine = db.get_bind()
    event.listen(engine, "before_cursor_execute", capture)
    try:
        call()
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    parts = []
    raw = db.connection().connection.driver_connection
    assert raw is not None
    with raw.cursor() as cursor:
        for statement, params in captured:
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + statement, params)
            plan = "\n".join(row[0] for row in cursor.fetchall())
            parts.append(f"{statement}\n\n{plan}")
    PLANS.mkdir(parents=True, exist_ok=True)
    (PLANS / f"costs_{label}.txt").write_text(("\n\n" + "-" * 80 + "\n\n").join(parts) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--charges", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument(
        "--days", type=float, default=90.0, help="spread the charges over this many days back"
    )
    parser.add_argument(
        "--plans", action="store_true", help="write the dashboard's plans to bench/plans/after"
    )
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
        started = time.perf_counter()
        ids = _seed(url, args.charges, args.days)
        seed_s = time.perf_counter() - started

        from app.costs import review, service

        engine = create_engine(url)
        team = service.Scope(ids["team_id"])
        person = service.Scope(ids["team_id"], ids["user_id"])
        month, days30 = service.this_month(), service.last_days(30)
        figures: dict[str, Any] = {}
        with Session(engine) as db:
            calls: dict[str, Callable[[], object]] = {
                "team_summary_month": lambda: service.cost_summary(db, team, month),
                "team_summary_30d": lambda: service.cost_summary(db, team, days30),
                "person_summary_month": lambda: service.cost_summary(db, person, month),
                "budget_lines": lambda: service.budget_lines(db, ids["team_id"]),
                "my_spend": lambda: service.my_spend(
                    db, team_id=ids["team_id"], user_id=ids["user_id"]
                ),
                "credit_outlook": lambda: service.credit_outlook(db),
                "reservation_check_team": lambda: service.committed_credits(
                    db, team_id=ids["team_id"], user_id=None, since=service.month_start()
                ),
                "ledger_page_500": lambda: service.ledger_page(db, team, days30, limit=500),
                "spend_by_project_month": lambda: service.spend_by_project(db, team, month),
                "review_month": lambda: review.cost_review(
                    db, team, review.review_period(month.first_day, month.last_day)
                ),
                "budget_checks_project": lambda: service.budget_checks(
                    db,
                    team_id=ids["team_id"],
                    user_id=ids["user_id"],
                    project_id=ids["project_id"],
                ),
            }
            for label, call in calls.items():
                figures[label] = _timed(args.runs, call)
            if args.plans:
                for label in ("team_summary_month", "budget_checks_project", "budget_lines"):
                    _write_plans(db, label, calls[label])
            plan = db.execute(
                text(
                    "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) SELECT coalesce(sum(credits), 0), "
                    "count(id) FROM charges WHERE team_id = :t AND created_at >= :s "
                    "AND created_at < :e"
                ),
                {"t": ids["team_id"], "s": month.start, "e": month.end},
            ).scalars()
            plan_text = "\n".join(plan)
        engine.dispose()
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    result = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "charges": args.charges,
        "days": args.days,
        "seed_s": round(seed_s, 1),
        "runs": args.runs,
        "figures": figures,
        "plan_team_month_total": plan_text,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    for label, numbers in figures.items():
        print(f"{label:26s} p50 {numbers['p50_ms']:8.2f} ms   p95 {numbers['p95_ms']:8.2f} ms")
    print(plan_text)


if __name__ == "__main__":
    main()
