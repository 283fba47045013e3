"""Benchmark of the queue: the claim query and the queue view with many jobs waiting.

Creates a database of its own on the PostgreSQL server (DATABASE_URL, else 127.0.0.1), migrates
it, queues `--jobs` jobs for 20 people in two teams (batches of 10; a tenth paused, one batch
moved to the front), then times, each `--runs` times: one claim (`dispatch_next`, rolled back,
so the queue stays as it was), the queue view of one team (`team_queue`: every position,
estimated start and reason) and one queued card's entry (`entry_for`, what a card's refresh
costs). Prints the median and worst in milliseconds and writes them to
bench/results/queue.json.

    .venv/bin/python -m bench.queue --jobs 2000 --runs 20
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session

from app.jobs.models import JobStatus
from bench.gallery import LOCAL_POSTGRES, bench_database
from bench.people import seed_teams_and_people

RESULTS = Path(__file__).resolve().parent / "results"


def seed(engine: Engine, jobs: int) -> list[Any]:
    """`jobs` queued jobs, batches of 10 for 20 people in turn; returns the team ids."""
    with engine.begin() as conn:
        teams = seed_teams_and_people(conn, per_team=10)
        conn.execute(
            text(
                "INSERT INTO jobs (id, team_id, user_id, status, model, prompt, params, width, "
                "height, seed, output_format, reference_count, batch_id, batch_index, "
                "estimated_credits, poll_count, attempts, unfinished_polls, requeues, "
                "paused_at, created_at, project_id) "
                "SELECT gen_random_uuid(), u.last_team_id, u.id, :queued, 'flux-2-pro', "
                "'bench prompt ' || g, '{}'::jsonb, 1024, 1024, g, 'jpeg', 0, "
                "md5(u.id::text || (g / 10)::text)::uuid, g % 10, 3, 0, 0, 0, 0, "
                "CASE WHEN g % 10 = 9 THEN now() END, "
                "now() - make_interval(secs => :jobs - g), "
                "(SELECT id FROM projects WHERE team_id = u.last_team_id AND is_default) "
                "FROM generate_series(0, :jobs - 1) AS g "
                "JOIN (SELECT id, last_team_id, row_number() OVER (ORDER BY email) - 1 AS n "
                "      FROM users) u ON u.n = (g / 10) % 20"
            ),
            {"jobs": jobs, "queued": JobStatus.QUEUED.value},
        )
        conn.execute(
            text(
                "UPDATE jobs SET queue_front = true, queue_key = now() "
                "WHERE batch_id = (SELECT batch_id FROM jobs ORDER BY created_at DESC LIMIT 1)"
            )
        )
    return teams


def _timed(runs: int, work: Any) -> dict[str, float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        work()
        times.append((time.perf_counter() - start) * 1000)
    return {"median_ms": round(statistics.median(times), 2), "max_ms": round(max(times), 2)}


def measure(engine: Engine, team_id: Any, runs: int) -> dict[str, Any]:
    """Times of one claim (rolled back) and of one team's queue view."""
    from app.db import utcnow
    from app.jobs import dispatch
    from app.jobs.models import Job, JobStatus
    from app.jobs.queue_view import entry_for, team_queue
    from app.settings import get_settings

    settings = get_settings()

    def claim() -> None:
        with Session(engine) as db:
            found = dispatch.dispatch_next(db, settings, utcnow())
            assert found.job is not None
            db.rollback()

    def view() -> None:
        with Session(engine) as db:
            entries = team_queue(db, settings, team_id=team_id, now=utcnow()).entries
            assert entries

    with Session(engine) as db:
        one = db.scalars(
            select(Job).where(Job.team_id == team_id, Job.status == JobStatus.QUEUED).limit(1)
        ).one()
        db.expunge(one)

    def card() -> None:
        with Session(engine) as db:
            assert entry_for(db, settings, one, utcnow()) is not None

    return {
        "claim": _timed(runs, claim),
        "team_queue": _timed(runs, view),
        "card_entry": _timed(runs, card),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000, help="queued jobs to seed")
    parser.add_argument("--runs", type=int, default=20, help="timed repetitions of each case")
    args = parser.parse_args(argv)
    from app.cli import migrate_database

    server = os.environ.get("DATABASE_URL") or LOCAL_POSTGRES
    server = server.replace("postgresql://", "postgresql+psycopg://", 1)
    print(f"load average (1, 5, 15 min): {[round(x, 2) for x in os.getloadavg()]}")
    with bench_database(server, keep=False) as url:
        print(f"migrating {make_url(url).database}")
        migrate_database(url)
        engine = create_engine(url)
        teams = seed(engine, args.jobs)
        os.environ["DATABASE_URL"] = url
        figures = {"jobs": args.jobs, "runs": args.runs, **measure(engine, teams[0], args.runs)}
        engine.dispose()
    for case in ("claim", "team_queue", "card_entry"):
        f = figures[case]
        print(f"{case}: median {f['median_ms']} ms, worst {f['max_ms']} ms")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "queue.json").write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
