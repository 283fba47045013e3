"""Pipeline throughput and latency: N jobs through real worker processes against the emulator.

    .venv/bin/python -m bench.pipeline --jobs 500 --latency 3 --cap 24 [--webhooks]
    .venv/bin/python -m bench.pipeline --jobs 60 --outage-at 5 --outage-for 30
    .venv/bin/python -m bench.pipeline --scale [--jobs 2000]

`--scale` is the scale run: 10,000 jobs from 50 people in mixed batches (1-16), cap 100,
latency 5 s ± 1 s, 4 worker processes; it also prints each person's wait for their first job
(min/p50/max) and PostgreSQL's connections and the workers' memory sampled through the run.

With `--outage-at S --outage-for D`, BFL (the emulator) answers every call 503 from S seconds
after the jobs were queued, for D seconds; the result then also says how long the queue took
to drain after BFL returned and how many POSTs BFL refused per job (`bench.outage` runs this
against an undisturbed run and records both in bench/RESULTS.md).

Runs in a database, Redis and media folder of its own (dropped afterwards), with the emulator
in a process of its own. Prints and writes bench/results/pipeline.json (pipeline-webhooks.json
with --webhooks): jobs/s against the ideal cap / latency, the time from BFL's Ready to the
image stored (p50/p95), polls per job, the peak of jobs at BFL (the studio's count and the
emulator's), POSTs per job, the CPU each kind of process used (workers, beat, web, emulator;
also in ms per job), and checks: the cap never exceeded, every job POSTed exactly once.
`--dump-jobs FILE` also keeps every job's timestamps and the processes' logs.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from app.jobs.models import JobStatus

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


class EmulatorProcess:
    """The emulator in a process of its own (settings from EMULATOR_* variables).

    BFL is another system: in the benchmark's own process the emulator would compete for one
    interpreter lock with queueing jobs and watching the peak, and slow down in bursts.
    """

    _CODE = (
        "import sys, uvicorn\n"
        "from app.emulator.api import create_app\n"
        "uvicorn.run(create_app(), host='127.0.0.1', port=int(sys.argv[1]),"
        " log_level='warning', access_log=False)\n"
    )

    def __init__(self, settings: dict[str, str]) -> None:
        import subprocess

        from app.embedded import free_port

        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", self._CODE, str(self.port)],
            env={**os.environ, **settings},
            cwd=ROOT,
        )

    def start(self, timeout: float = 30.0) -> EmulatorProcess:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("the emulator exited early")
            try:
                httpx.get(f"{self.base_url}/_emulator/config", timeout=1).raise_for_status()
                return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("the emulator did not start")

    def accepted_posts(self) -> int:
        import httpx

        answer = httpx.get(f"{self.base_url}/_emulator/submissions", timeout=30)
        return int(answer.json()["count"])

    def submissions(self) -> list[dict[str, Any]]:
        """The emulator's log of accepted submissions (task id, time, payload)."""
        import httpx

        answer = httpx.get(f"{self.base_url}/_emulator/submissions", timeout=30)
        return list(answer.json()["submissions"])

    def accepted_ids(self) -> list[str]:
        """BFL's task ids of the accepted submissions, one per POST."""
        import httpx

        answer = httpx.get(f"{self.base_url}/_emulator/submissions", timeout=30)
        return [str(entry["id"]) for entry in answer.json()["submissions"]]

    def state(self) -> dict[str, Any]:
        """Active tasks now, the peak, and how often the account's cap refused a POST."""
        import httpx

        return dict(httpx.get(f"{self.base_url}/_emulator/state", timeout=30).json())

    def refused_posts(self) -> dict[str, int]:
        """Refused submissions by HTTP status."""
        import httpx

        answer = httpx.get(f"{self.base_url}/_emulator/refusals", timeout=30)
        counts: dict[str, int] = {}
        for refusal in answer.json()["refusals"]:
            counts[str(refusal["status"])] = counts.get(str(refusal["status"]), 0) + 1
        return counts

    def set_unavailable(self, unavailable: bool) -> None:
        import httpx

        httpx.patch(
            f"{self.base_url}/_emulator/config", json={"unavailable": unavailable}, timeout=30
        ).raise_for_status()

    def cpu_seconds(self) -> float:
        import psutil

        times = psutil.Process(self.proc.pid).cpu_times()
        return float(times.user + times.system)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except Exception:
            self.proc.kill()


#: What --scale sets (unless given on the command line).
_SCALE: dict[str, Any] = {
    "jobs": 10_000,
    "users": 50,
    "mixed_batches": True,
    "cap": 100,
    "latency": 5.0,
    "jitter": 1.0,
    "workers": 4,
    "timeout": 3600.0,
}


def _batches(args: argparse.Namespace) -> list[tuple[int, int]]:
    """(person, count) for every batch, in the order they are queued."""
    import random

    rng = random.Random(7)
    batches: list[tuple[int, int]] = []
    remaining, turn = args.jobs, 0
    while remaining > 0:
        if args.mixed_batches:
            count = min(rng.choice((1, 1, 2, 4, 8, 16)), remaining)
            person = rng.randrange(args.users)
        else:
            count, person = min(16, remaining), turn % args.users
        # Everyone queues something early on: the first-job waits compare people, not arrivals.
        if args.mixed_batches and turn < args.users:
            person = turn
        batches.append((person, count))
        remaining -= count
        turn += 1
    return batches


class Sampler:
    """Samples, every `every` seconds, PostgreSQL's connections to the run's database and the
    resident memory (MiB) of every worker process family."""

    def __init__(self, engine: Any, db_name: str, workers: list[Any], every: float = 2.0):
        self.engine, self.db_name, self.workers, self.every = engine, db_name, workers, every
        self.connections: list[int] = []
        self.worker_rss_mib: list[float] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil
        from sqlalchemy import text

        while not self.stop.wait(self.every):
            with self.engine.connect() as conn:
                count = conn.execute(
                    text("SELECT count(*) FROM pg_stat_activity WHERE datname = :name"),
                    {"name": self.db_name},
                ).scalar_one()
            self.connections.append(int(count) - 1)  # less this sampler's own
            rss = 0
            for worker in self.workers:
                try:
                    parent = psutil.Process(worker.proc.pid)
                    family = [parent, *parent.children(recursive=True)]
                    rss += sum(member.memory_info().rss for member in family)
                except psutil.NoSuchProcess:
                    continue
            self.worker_rss_mib.append(round(rss / 2**20, 1))

    def summary(self) -> dict[str, Any]:
        def spread(values: list[Any]) -> dict[str, Any]:
            if not values:
                return {}
            third = max(1, len(values) // 3)
            return {
                "samples": len(values),
                "min": min(values),
                "max": max(values),
                "first_third_mean": round(statistics.mean(values[:third]), 1),
                # Growth that only comes early is warm-up; a leak keeps growing through all three.
                "middle_third_mean": round(statistics.mean(values[third:-third] or values), 1),
                "last_third_mean": round(statistics.mean(values[-third:]), 1),
            }

        return {
            "postgres_connections": spread(self.connections),
            "worker_rss_mib": spread(self.worker_rss_mib),
        }


def _first_job_waits(rows: list[Any]) -> dict[str, float]:
    """min / p50 / max over people of (their first job at BFL - their first job queued), s."""
    firsts: dict[Any, tuple[datetime, datetime | None]] = {}
    for r in rows:
        queued, sent = firsts.get(r.user_id, (r.created_at, r.submitted_at))
        sent_now = r.submitted_at
        if sent is None or (sent_now is not None and sent_now < sent):
            sent = sent_now
        firsts[r.user_id] = (min(queued, r.created_at), sent)
    waits = [(s - q).total_seconds() for q, s in firsts.values() if s is not None]
    if not waits:
        return {}
    return {
        "people": len(waits),
        "min": round(min(waits), 2),
        "p50": round(_percentile(waits, 0.5), 2),
        "max": round(max(waits), 2),
    }


def _cpu_seconds(processes: list[Any]) -> dict[str, float]:
    """CPU seconds (user + system) of each studio process and its children, by kind.

    `workers` is every worker process; it is also split into `worker_consumers` (each
    worker's main process: Celery's consumer, which receives, schedules and acks messages)
    and `worker_pools` (the pool processes that run the tasks).
    """
    import psutil

    totals: dict[str, float] = {}
    for process in processes:
        if process.proc is None:
            continue
        kind = process.name if process.name in ("web", "beat") else "workers"
        try:
            parent = psutil.Process(process.proc.pid)
            family = [parent, *parent.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for member in family:
            try:
                times = member.cpu_times()
            except psutil.NoSuchProcess:
                continue
            seconds = times.user + times.system
            totals[kind] = totals.get(kind, 0.0) + seconds
            if kind == "workers":
                # The worker command's own process runs Celery's consumer; the pool processes
                # are its children (forked by it).
                part = "worker_consumers" if member.pid == parent.pid else "worker_pools"
                totals[part] = totals.get(part, 0.0) + seconds
    return totals


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
    parser.add_argument("--jitter", type=float, default=0.0, help="emulated latency jitter, ± s")
    parser.add_argument(
        "--mixed-batches",
        action="store_true",
        help="people queue batches of 1 to 16 in a random order instead of 16 in turn",
    )
    parser.add_argument(
        "--scale",
        action="store_true",
        help="the scale run: 10,000 jobs of 50 people in mixed batches, cap 100, latency "
        "5 s ± 1 s, 4 worker processes (each setting still overridable)",
    )
    parser.add_argument("--timeout", type=float, default=900.0, help="give up after, s")
    parser.add_argument(
        "--outage-at",
        type=float,
        default=None,
        help="BFL answers 503 from this many s after queueing",
    )
    parser.add_argument("--outage-for", type=float, default=30.0, help="for this many s")
    parser.add_argument("--results", type=Path, default=None, help="write the figures here instead")
    parser.add_argument(
        "--dump-jobs",
        type=Path,
        default=None,
        help="also write every job's timestamps and the processes' log files' paths here",
    )
    args = parser.parse_args(argv)
    # Stopped from outside (timeout, kill): still stop the processes and drop the database.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.scale:
        given = set(argv if argv is not None else sys.argv[1:])
        for flag, value in _SCALE.items():
            if f"--{flag.replace('_', '-')}" not in given:
                setattr(args, flag, value)

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
            # Workers and the web process refuse the built-in development key.
            "SECRET_KEY": os.environ.get("SECRET_KEY") or secrets.token_urlsafe(48),
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
    from app.jobs.service import create_jobs
    from tests.pipeline_support import BeatProcess, WebProcess, WorkerProcess

    emulator = EmulatorProcess(
        {
            "EMULATOR_LATENCY_MEAN_S": str(args.latency),
            "EMULATOR_LATENCY_JITTER_S": str(args.jitter),
            # BFL's own cap is the studio's: a studio that ever exceeds it meets a 429.
            "EMULATOR_ACCOUNT_ACTIVE_TASK_CAP": str(args.cap),
            "EMULATOR_RANDOM_SEED": "1",
        }
    ).start()
    os.environ["EMULATOR_URL"] = emulator.base_url
    # The emulator hands out polling URLs on localhost: allow it like a regional BFL host.
    os.environ["BFL_ALLOWED_HOSTS"] = "bfl.ai,localhost"
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
                    text(
                        "SELECT count(*) FROM jobs WHERE status IN (:submitting, :pending)"
                        " AND bfl_ready_at IS NULL"
                    ),
                    {
                        "submitting": JobStatus.SUBMITTING.value,
                        "pending": JobStatus.PENDING.value,
                    },
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
        # The sweeper runs as in production (every SWEEP_INTERVAL_S), its CPU counted apart.
        processes.append(BeatProcess(env, name="beat").start())
        sampler = Sampler(engine, db_name, [p for p in processes if p.name.startswith("bench-")])
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

        cpu_before = sum(os.times()[:2])
        cpu_start = _cpu_seconds(processes)
        emulator_cpu_start = emulator.cpu_seconds()
        watcher = threading.Thread(target=watch_peak, daemon=True)
        watcher.start()
        sampler.thread.start()
        started = time.time()
        for turn, (person, count) in enumerate(_batches(args)):
            with session_scope() as db:
                create_jobs(
                    db,
                    user_id=users[person],
                    team_id=team_id,
                    model="flux-2-pro",
                    params={"prompt": f"bench {turn}", "width": args.size, "height": args.size},
                    count=count,
                )
        queued = time.time()

        deadline = started + args.timeout
        outage_from = queued + args.outage_at if args.outage_at is not None else None
        outage_until = outage_from + args.outage_for if outage_from is not None else None
        down = False
        returned_at: float | None = None
        left_at_return: int | None = None
        while True:
            now = time.time()
            if outage_from is not None and not down and returned_at is None and now >= outage_from:
                emulator.set_unavailable(True)
                down = True
            if down and outage_until is not None and now >= outage_until:
                emulator.set_unavailable(False)
                down = False
                returned_at = time.time()
            with engine.connect() as conn:
                left = conn.execute(
                    text("SELECT count(*) FROM jobs WHERE finished_at IS NULL")
                ).scalar_one()
            if returned_at is not None and left_at_return is None:
                left_at_return = int(left)
            if (left == 0 and not down) or time.time() > deadline:
                break
            time.sleep(0.2)
        stop.set()
        watcher.join()
        sampler.stop.set()
        sampler.thread.join()
        cpu = {
            name: round(seconds - cpu_start.get(name, 0.0), 1)
            for name, seconds in _cpu_seconds(processes).items()
        }
        cpu["emulator"] = round(emulator.cpu_seconds() - emulator_cpu_start, 1)
        cpu["bench"] = round(sum(os.times()[:2]) - cpu_before, 1)

        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT id, user_id, status, created_at, claimed_at, submitted_at, "
                    "bfl_ready_at, finished_at, poll_count, bfl_task_id FROM jobs"
                )
            ).all()
        ready = [r for r in rows if r.status == JobStatus.READY]
        first = min(r.created_at for r in rows)
        last = max(r.finished_at for r in rows if r.finished_at is not None)
        span = (last - first).total_seconds()
        throughput = len(rows) / span if span > 0 else float("nan")
        ideal = args.cap / args.latency
        lags = [(r.finished_at - r.bfl_ready_at).total_seconds() for r in ready]
        statuses: dict[str, int] = {}
        for r in rows:
            statuses[r.status] = statuses.get(r.status, 0) + 1
        posts = emulator.accepted_posts()
        submissions = emulator.submissions() if args.dump_jobs is not None else []
        refused = emulator.refused_posts()
        post_ids = emulator.accepted_ids()
        emulator_state = emulator.state()
        # Every job POSTed exactly once: each accepted POST is one job's task, no job has two,
        # and BFL refused none (a refusal is a POST too).
        task_ids = [r.bfl_task_id for r in rows if r.bfl_task_id is not None]
        posts_per_job = {
            "accepted_posts": posts,
            "refused_posts": sum(refused.values()),
            "jobs_with_a_task": len(set(task_ids)),
            "posts_not_of_a_job": len(set(post_ids) - set(task_ids)),
        }
        once_each = (
            posts == len(rows) == len(set(task_ids))
            and set(post_ids) == set(task_ids)
            and not refused
        )
        checks = {
            "cap_never_exceeded": peak <= args.cap
            and int(emulator_state["peak_active_tasks"]) <= args.cap
            and int(emulator_state["account_cap_refusals"]) == 0,
            "every_job_posted_exactly_once": once_each,
            "every_job_ready": statuses.get(JobStatus.READY, 0) == len(rows),
        }
        first_waits = _first_job_waits(rows)
        outage: dict[str, Any] | None = None
        if args.outage_at is not None:
            drain = (
                (last - datetime.fromtimestamp(returned_at, UTC)).total_seconds()
                if (returned_at is not None)
                else None
            )
            outage = {
                "at_s": args.outage_at,
                "for_s": args.outage_for,
                "jobs_left_when_bfl_returned": left_at_return,
                "drain_after_return_s": round(drain, 2) if drain is not None else None,
            }
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
            "refused_posts": refused,
            "refused_posts_per_job": round(sum(refused.values()) / max(1, args.jobs), 3),
            "outage": outage,
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
            "peak_active_at_bfl": emulator_state["peak_active_tasks"],
            "cap_refusals_at_bfl": emulator_state["account_cap_refusals"],
            "posts": posts_per_job,
            "posts_per_job": round((posts + sum(refused.values())) / max(1, len(rows)), 3),
            "checks": checks,
            # From a person's first job queued to their first job at BFL, over the people.
            "first_job_wait_s": first_waits,
            "samples": sampler.summary(),
            "cpu_ms_per_job": {
                kind: round(1000 * seconds / max(1, len(rows)), 1) for kind, seconds in cpu.items()
            },
            # CPU seconds used during the run, per kind of process (the machine has
            # os.cpu_count() cores): the studio's workers and web process, the emulator
            # playing BFL, and this process (queueing jobs, watching the peak).
            "cpu_s": cpu,
            "cpu_count": os.cpu_count(),
        }
    finally:
        stop.set()
        for process in processes:
            process.stop()
            if args.dump_jobs is None:
                process.log_path.unlink(missing_ok=True)
        emulator.stop()
        engine.dispose()
        redis_server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)'))
        admin.dispose()

    print(json.dumps(result, indent=2))
    failed = [name for name, ok in result["checks"].items() if not ok]
    print("checks: " + ("all passed" if not failed else "FAILED: " + ", ".join(failed)))
    if args.dump_jobs is not None:
        dump = {
            "logs": {p.name: str(p.log_path) for p in processes},
            "jobs": [{k: str(v) if k == "id" else v for k, v in r._asdict().items()} for r in rows],
            # BFL's side: each accepted POST's task id and the emulator's time of it.
            "submissions": [{"id": s["id"], "time": s["time"]} for s in submissions],
        }
        args.dump_jobs.write_text(json.dumps(dump, default=str, indent=1) + "\n")
    target = RESULTS.with_name("pipeline-webhooks.json") if args.webhooks else RESULTS
    if args.outage_at is not None:
        target = RESULTS.with_name("pipeline-outage.json")
    if args.results is not None:
        target = args.results
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
