"""Pipeline throughput and latency: N jobs through real worker processes against the emulator.

    .venv/bin/python -m bench.pipeline --jobs 500 --latency 3 --cap 24 [--webhooks]

Runs in a database, Redis and media folder of its own (dropped afterwards). Prints and writes
bench/results/pipeline.json (pipeline-webhooks.json with --webhooks): jobs/s against the ideal
cap / latency, the time from BFL's Ready to the image stored (p50/p95), polls per job and the
peak of jobs at BFL.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "pipeline.json"


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def _mean_gap(rows: list[Any], start: str, end: str) -> float:
    gaps = [(getattr(r, end) - getattr(r, start)).total_seconds() for r in rows]
    return round(statistics.mean(gaps), 3) if gaps else float("nan")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=500, help="jobs to push through")
    parser.add_argument("--latency", type=float, default=3.0, help="emulated BFL latency, s")
    parser.add_argument("--cap", type=int, default=24, help="BFL_MAX_ACTIVE_TASKS")
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument("--concurrency", type=int, default=4, help="processes per worker")
    parser.add_argument("--users", type=int, default=4, help="people sharing the queue")
    parser.add_argument("--size", type=int, default=1024, help="image width and height")
    parser.add_argument("--webhooks", action="store_true", help="run a web process for webhooks")
    parser.add_argument("--timeout", type=float, default=900.0, help="give up after, s")
    args = parser.parse_args(argv)

    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from app.embedded import EmbeddedRedis, free_port

    admin_url = os.environ.get(
        "BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    )
    db_name = f"studio_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{db_name}"'))
    db_url = make_url(admin_url).set(database=db_name).render_as_string(hide_password=False)
    data_dir = Path(tempfile.mkdtemp(prefix="studio-bench-"))
    redis_server = EmbeddedRedis(data_dir / "redis").start(persist=False)
    web_port = free_port()
    os.environ.update(
        {
            "DATABASE_URL": db_url,
            "REDIS_URL": redis_server.url,
            "CELERY_KEY_PREFIX": "bench:",
            "DATA_DIR": str(data_dir),
            "BFL_MAX_ACTIVE_TASKS": str(args.cap),
            "MAX_BATCH_SIZE": "16",
            "LOG_LEVEL": "INFO",
            "LOG_FORMAT": "json",
        }
    )
    os.environ.pop("BFL_API_KEY", None)
    if args.webhooks:
        os.environ["PUBLIC_URL"] = f"http://127.0.0.1:{web_port}"
    else:
        os.environ.pop("PUBLIC_URL", None)

    from app.settings import get_settings

    get_settings.cache_clear()
    from app.cli import migrate_database

    migrate_database(db_url)

    from app.auth.service import add_member, create_team, create_user
    from app.db import get_engine, session_scope
    from app.emulator import EmulatorConfig, EmulatorServer
    from app.jobs.service import create_jobs
    from tests.pipeline_support import WebProcess, WorkerProcess

    emulator = EmulatorServer(
        EmulatorConfig(
            latency_mean_s=args.latency,
            latency_jitter_s=0.0,
            account_active_task_cap=max(args.cap, 24),
            random_seed=1,
        )
    ).start()
    os.environ["EMULATOR_URL"] = emulator.base_url
    env = dict(os.environ)
    processes: list[Any] = []
    peak = 0
    stop = threading.Event()
    engine = get_engine()

    def watch_peak() -> None:
        nonlocal peak
        with engine.connect() as conn:
            while not stop.is_set():
                active = conn.execute(
                    text("SELECT count(*) FROM jobs WHERE status IN ('submitting', 'pending')")
                ).scalar_one()
                conn.rollback()
                peak = max(peak, int(active))
                time.sleep(0.025)

    try:
        if args.webhooks:
            processes.append(WebProcess(env, web_port).start())
        for i in range(args.workers):
            processes.append(
                WorkerProcess(env, concurrency=args.concurrency, name=f"bench-{i}").start()
            )
        with session_scope() as db:
            team = create_team(db, "Bench")
            users = []
            for i in range(args.users):
                user = create_user(
                    db, email=f"bench{i}@example.com", name=f"Bench {i}", password="bench-pass-123"
                )
                add_member(db, user, team)
                users.append(user.id)
            team_id = team.id

        watcher = threading.Thread(target=watch_peak, daemon=True)
        watcher.start()
        started = time.time()
        remaining, turn = args.jobs, 0
        while remaining > 0:
            count = min(16, remaining)
            with session_scope() as db:
                create_jobs(
                    db,
                    user_id=users[turn % len(users)],
                    team_id=team_id,
                    model="flux-2-pro",
                    params={"prompt": f"bench {turn}", "width": args.size, "height": args.size},
                    count=count,
                )
            remaining -= count
            turn += 1
        queued = time.time()

        deadline = started + args.timeout
        while True:
            with engine.connect() as conn:
                left = conn.execute(
                    text("SELECT count(*) FROM jobs WHERE finished_at IS NULL")
                ).scalar_one()
            if left == 0 or time.time() > deadline:
                break
            time.sleep(0.2)
        stop.set()
        watcher.join()

        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT status, created_at, claimed_at, submitted_at, bfl_ready_at, "
                    "finished_at, poll_count FROM jobs"
                )
            ).all()
        ready = [r for r in rows if r.status == "ready"]
        first = min(r.created_at for r in rows)
        last = max(r.finished_at for r in rows if r.finished_at is not None)
        span = (last - first).total_seconds()
        throughput = len(rows) / span if span > 0 else float("nan")
        ideal = args.cap / args.latency
        lags = [(r.finished_at - r.bfl_ready_at).total_seconds() for r in ready]
        statuses: dict[str, int] = {}
        for r in rows:
            statuses[r.status] = statuses.get(r.status, 0) + 1
        posts = len(emulator.submissions())
        result = {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": "python -m bench.pipeline " + " ".join(argv or sys.argv[1:]),
            "jobs": args.jobs,
            "latency_s": args.latency,
            "cap": args.cap,
            "workers": args.workers,
            "concurrency": args.concurrency,
            "webhooks": args.webhooks,
            "image_size": args.size,
            "statuses": statuses,
            "unfinished": int(left),
            "accepted_posts": posts,
            "seconds_to_queue_all": round(queued - started, 2),
            "span_s": round(span, 2),
            "jobs_per_s": round(throughput, 3),
            "ideal_jobs_per_s": round(ideal, 3),
            "ratio": round(throughput / ideal, 3),
            "ready_to_stored_p50_s": round(_percentile(lags, 0.5), 3),
            "ready_to_stored_p95_s": round(_percentile(lags, 0.95), 3),
            "ready_to_stored_max_s": round(max(lags), 3) if lags else None,
            # Where a slot's time goes: claim to BFL's answer, BFL's run, Ready to stored;
            # the rest of cap * span / jobs is the wait between a slot freeing and a claim.
            "slot_cycle_s": round(args.cap * span / len(rows), 3),
            "claim_to_submitted_mean_s": _mean_gap(ready, "claimed_at", "submitted_at"),
            "submitted_to_ready_mean_s": _mean_gap(ready, "submitted_at", "bfl_ready_at"),
            "ready_to_stored_mean_s": _mean_gap(ready, "bfl_ready_at", "finished_at"),
            "polls_per_job": round(statistics.mean(r.poll_count for r in rows), 2),
            "peak_active": peak,
        }
    finally:
        stop.set()
        for process in processes:
            process.stop()
        emulator.stop()
        engine.dispose()
        redis_server.stop()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)'))
        admin.dispose()

    print(json.dumps(result, indent=2))
    target = RESULTS.with_name("pipeline-webhooks.json") if args.webhooks else RESULTS
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
