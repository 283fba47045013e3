"""Gallery benchmark: 100,000 jobs across 20 people in 2 teams, measured over HTTP.

Creates a database of its own on the PostgreSQL server (DATABASE_URL, else 127.0.0.1), migrates
it, seeds jobs and image rows with INSERT ... SELECT generate_series, starts a real
`studio web` process against it, and measures with an API token (as a script would):

- the gallery's first page, a deep page reached by its keyset cursor, a filtered page,
- prompt search, each as p50/p95 over sequential requests on a kept-alive connection,
- the web process's resident memory after the runs.

Run: `.venv/bin/python -m bench.gallery` (`--jobs`, `--requests`, `--keep` to keep the
database). Prints the figures and writes bench/results/gallery.json; the database is dropped.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url

from bench.people import seed_teams_and_people

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "gallery.json"
LOCAL_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
LOCAL_REDIS = "redis://127.0.0.1:6379/0"

TARGETS = {"gallery_p95_ms": 30.0, "search_p95_ms": 50.0, "web_rss_mb": 150.0}
PEOPLE_PER_TEAM = 10
MODELS = ("flux-2-pro", "flux-2-flex", "flux-2-max", "flux-2-klein-4b", "flux-kontext-pro")
# Words the seeded prompts are built from, so searches match realistic shares of the rows.
SUBJECTS = (
    "lighthouse", "fox", "teapot", "cathedral", "robot", "violin", "orchard", "submarine",
    "heron", "bicycle", "glacier", "lantern", "astronaut", "windmill", "octopus", "bakery",
    "tram", "cactus", "owl", "castle", "kite", "piano", "whale", "bridge", "market",
    "greenhouse", "dragonfly", "typewriter", "canyon", "carousel",
)  # fmt: skip
PLACES = (
    "at dusk", "in the rain", "on a foggy harbour", "under neon lights", "in a snowy forest",
    "on the moon", "in a sunflower field", "inside a library", "by the sea", "in the desert",
    "on a rooftop", "in a greenhouse", "at the market", "in deep space", "on a frozen lake",
    "in a jungle", "at a train station", "in a medieval village", "underwater", "in the clouds",
)  # fmt: skip
STYLES = (
    "watercolour", "oil painting", "35mm photograph", "isometric illustration", "ink sketch",
    "cinematic still", "studio portrait", "low-poly render", "ukiyo-e print", "claymation",
    "charcoal drawing", "pixel art", "art deco poster", "macro photograph", "tilt-shift photo",
)  # fmt: skip
#: Search terms: common (1 in 30 prompts), mid (a subject and a style), rare (three words).
SEARCHES = ("lighthouse", "owl watercolour", "glacier frozen lake", "pixel art robot", "teapot")


def _sql_array(words: tuple[str, ...]) -> str:
    return "(ARRAY[" + ", ".join("'" + w.replace("'", "''") + "'" for w in words) + "])"


@contextmanager
def bench_database(server_url: str, keep: bool) -> Iterator[str]:
    """A new database on the server, dropped afterwards unless `keep`."""
    name = f"studio_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        if keep:
            print(f"kept database {name}")
        else:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def seed(engine: Engine, jobs: int) -> dict[str, Any]:
    """Two teams, 20 people, `jobs` jobs (about 88 % with image rows); returns ids and token."""
    from app.security import hash_password, token_hash

    password_hash = hash_password(secrets.token_urlsafe(16))
    token = "fts_bench" + secrets.token_urlsafe(24)
    started = time.perf_counter()
    with engine.begin() as conn:
        teams = seed_teams_and_people(
            conn,
            per_team=PEOPLE_PER_TEAM,
            password_hash=password_hash,
            admin_email="person1@bench.example",
        )
        people = {
            str(team): [
                r[0]
                for r in conn.execute(
                    text("SELECT id FROM users WHERE last_team_id = :t ORDER BY email"),
                    {"t": team},
                )
            ]
            for team in teams
        }
        viewer = conn.execute(
            text("SELECT id, last_team_id FROM users WHERE email = 'person1@bench.example'")
        ).one()
        conn.execute(
            text(
                "INSERT INTO api_tokens (id, user_id, team_id, name, prefix, token_hash, "
                "created_at) VALUES (gen_random_uuid(), :u, :t, 'bench', :p, :h, now())"
            ),
            {"u": viewer[0], "t": viewer[1], "p": token[:12], "h": token_hash(token)},
        )
        extra_columns, extra_values, extra_params = _other_job_columns()
        # Job i belongs to team i % 2 and person (i / 2) % 10 of it, one every ~30 s back in
        # time; statuses, models and prompts cycle at co-prime periods so filters combine.
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
                    SELECT g,
                           now() - make_interval(secs => g * 30 + (g % 7)) AS at,
                           {_sql_array(SUBJECTS)}[1 + g % {len(SUBJECTS)}] || ' '
                             || {_sql_array(PLACES)}[1 + (g / 7) % {len(PLACES)}] || ', '
                             || {_sql_array(STYLES)}[1 + (g / 3) % {len(STYLES)}]
                             || ', detailed, soft light' AS prompt,
                           {_sql_array(MODELS)}[1 + (g / 5) % {len(MODELS)}] AS model,
                           CASE WHEN g % 50 = 0 THEN 'failed'
                                WHEN g % 37 = 0 THEN 'moderated'
                                WHEN g % 29 = 0 THEN 'cancelled'
                                ELSE 'ready' END AS status
                    FROM generate_series(1, :jobs) AS g
                )
                INSERT INTO jobs (
                    id, team_id, user_id, status, model, prompt, params, width, height, seed,
                    output_format, reference_count, batch_index, estimated_credits,
                    cost_credits, poll_count, attempts, requeues, result_seed, error_code,
                    error_message, claimed_at, submitted_at, bfl_ready_at, finished_at,
                    created_at{extra_columns})
                SELECT gen_random_uuid(), p.team_id, p.user_id, s.status, s.model, s.prompt,
                       jsonb_build_object('prompt', s.prompt, 'width', 1024, 'height', 1024),
                       1024, 1024, s.g, 'jpeg', 0, 0, 3, 3, 4, 1, 0, s.g,
                       CASE s.status WHEN 'failed' THEN 'bfl_server_error'
                                     WHEN 'moderated' THEN 'request_moderated' END,
                       CASE WHEN s.status IN ('failed', 'moderated') THEN 'seeded' END,
                       s.at + interval '1 second', s.at + interval '1 second',
                       s.at + interval '9 seconds', s.at + interval '10 seconds', s.at
                       {extra_values}
                FROM series s
                JOIN people p ON p.team_n = s.g % 2 AND p.n = (s.g / 2) % {PEOPLE_PER_TEAM}
                """  # noqa: S608 - built from this module's constants only
            ),
            {"jobs": jobs, **extra_params},
        )
        conn.execute(
            text(
                "INSERT INTO images (id, job_id, team_id, storage_key, thumb_key, content_type, "
                "width, height, size_bytes, created_at) "
                "SELECT gen_random_uuid(), id, team_id, 'bench/' || id || '.jpg', "
                "'bench/' || id || '.webp', 'image/jpeg', 1024, 1024, 412345, finished_at "
                "FROM jobs WHERE status = 'ready'"
            )
        )
        # Favourites for the viewer: every 40th of their team's jobs.
        conn.execute(
            text(
                "INSERT INTO favourites (user_id, job_id, created_at) "
                "SELECT :u, id, now() FROM jobs WHERE team_id = :t AND seed % 40 = 0"
            ),
            {"u": viewer[0], "t": viewer[1]},
        )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))
    counts = {}
    with engine.connect() as conn:
        for table in ("jobs", "images", "users", "teams", "favourites"):
            counts[table] = conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()  # noqa: S608
    return {
        "seconds": round(time.perf_counter() - started, 1),
        "rows": counts,
        "token": token,
        "team_id": str(viewer[1]),
        "viewer_id": str(viewer[0]),
        "colleague_id": str(people[str(viewer[1])][3]),
    }


_SEEDED_JOB_COLUMNS = frozenset(
    [
        "id",
        "team_id",
        "user_id",
        "status",
        "model",
        "prompt",
        "params",
        "width",
        "height",
        "seed",
        "output_format",
        "reference_count",
        "batch_index",
        "estimated_credits",
        "cost_credits",
        "poll_count",
        "attempts",
        "requeues",
        "result_seed",
        "error_code",
        "error_message",
        "claimed_at",
        "submitted_at",
        "bfl_ready_at",
        "finished_at",
        "created_at",
        "prompt_tsv",
    ]
)


def _other_job_columns() -> tuple[str, str, dict[str, Any]]:
    """Required job columns this seed does not name, filled with the model's defaults, so the
    benchmark keeps working as the jobs table grows."""
    from app.jobs.models import Job

    names: list[str] = []
    params: dict[str, Any] = {}
    for column in Job.__table__.columns:
        if column.name in _SEEDED_JOB_COLUMNS or column.nullable:
            continue
        if column.server_default is not None or column.computed is not None:
            continue
        default = column.default
        if default is None or not getattr(default, "is_scalar", False):
            raise RuntimeError(f"bench seed does not know how to fill jobs.{column.name}")
        names.append(column.name)
        params[f"default_{column.name}"] = default.arg  # type: ignore[attr-defined]
    columns = "".join(f", {n}" for n in names)
    values = "".join(f", :default_{n}" for n in names)
    return columns, values, params


def deep_cursor(engine: Engine, team_id: str, depth: int) -> str:
    """The keyset cursor a reader reaches after scrolling past `depth` tiles."""
    from app.gallery.service import Cursor

    with engine.connect() as conn:
        row = conn.execute(
            text(
                "SELECT created_at, id FROM jobs WHERE team_id = :t AND deleted_at IS NULL "
                "ORDER BY created_at DESC, id DESC OFFSET :d LIMIT 1"
            ),
            {"t": team_id, "d": depth},
        ).one()
    return Cursor(row[0], row[1]).encode()


def start_web(env: dict[str, str], port: int, log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "web", "--port", str(port)],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("web exited:\n" + log_path.read_text(errors="replace")[-3000:])
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("web did not start in time")


def measure(
    client: httpx.Client, name: str, urls: Callable[[int], str], requests: int, warmup: int = 20
) -> dict[str, Any]:
    """p50/p95/max of `requests` sequential GETs (after `warmup` untimed ones)."""
    for i in range(warmup):
        client.get(urls(i)).raise_for_status()
    timings: list[float] = []
    size = 0
    for i in range(requests):
        started = time.perf_counter()
        response = client.get(urls(i))
        timings.append((time.perf_counter() - started) * 1000)
        response.raise_for_status()
        size = len(response.content)
    timings.sort()
    figures = {
        "requests": requests,
        "p50_ms": round(statistics.median(timings), 2),
        "p95_ms": round(timings[int(0.95 * (len(timings) - 1))], 2),
        "max_ms": round(timings[-1], 2),
        "last_body_bytes": size,
    }
    print(f"  {name:<26} p50 {figures['p50_ms']:7.2f} ms   p95 {figures['p95_ms']:7.2f} ms")
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000, help="jobs to seed")
    parser.add_argument("--requests", type=int, default=200, help="timed requests per case")
    parser.add_argument("--keep", action="store_true", help="keep the benchmark database")
    args = parser.parse_args(argv)

    from app.cli import migrate_database
    from app.embedded import free_port

    load_before = round(os.getloadavg()[0], 2)
    server = os.environ.get("DATABASE_URL") or LOCAL_POSTGRES
    server = server.replace("postgresql://", "postgresql+psycopg://", 1)
    data_dir = Path(tempfile.mkdtemp(prefix="studio-bench-gallery-"))
    with bench_database(server, args.keep) as url:
        print(f"migrating {make_url(url).database}")
        migrate_database(url)
        engine = create_engine(url)
        print(f"seeding {args.jobs:,} jobs")
        seeded = seed(engine, args.jobs)
        print(f"  seeded in {seeded['seconds']} s: {seeded['rows']}")
        deep = deep_cursor(engine, seeded["team_id"], min(40_000, args.jobs // 2 - 100))
        engine.dispose()

        env = dict(os.environ)
        env.update(
            {
                "DATABASE_URL": url,
                "REDIS_URL": os.environ.get("REDIS_URL") or LOCAL_REDIS,
                "DATA_DIR": str(data_dir),
                "CELERY_KEY_PREFIX": f"bench-{uuid.uuid4().hex[:6]}:",
                "LOG_FORMAT": "json",
                "LOG_LEVEL": "INFO",
                "API_RATE_LIMIT_PER_MINUTE": "0",
            }
        )
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        port = free_port()
        proc = start_web(env, port, data_dir / "web.log")
        results: dict[str, Any] = {}
        try:
            headers = {"Authorization": f"Bearer {seeded['token']}"}
            with httpx.Client(
                base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=30
            ) as client:
                print(f"measuring over HTTP ({args.requests} requests per case)")
                results["gallery_first_page"] = measure(
                    client, "gallery, first page", lambda i: "/gallery", args.requests
                )
                results["gallery_deep_page"] = measure(
                    client,
                    "gallery, deep page (cursor)",
                    lambda i: f"/gallery/more?after={deep}",
                    args.requests,
                )
                results["gallery_filtered"] = measure(
                    client,
                    "gallery, model + person",
                    lambda i: f"/gallery?model={MODELS[i % 2]}&user={seeded['colleague_id']}",
                    args.requests,
                )
                results["gallery_favourites"] = measure(
                    client, "gallery, favourites", lambda i: "/gallery?favourites=1", args.requests
                )
                results["search"] = measure(
                    client,
                    "prompt search",
                    lambda i: "/gallery?q=" + SEARCHES[i % len(SEARCHES)].replace(" ", "+"),
                    args.requests,
                )
            rss_mb = psutil.Process(proc.pid).memory_info().rss / 2**20
            for child in psutil.Process(proc.pid).children(recursive=True):
                rss_mb += child.memory_info().rss / 2**20
            results["web_rss_mb"] = round(rss_mb, 1)
            print(f"  {'web process RSS':<26} {rss_mb:7.1f} MB")
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
            shutil.rmtree(data_dir, ignore_errors=True)

    gallery_p95 = max(
        results[k]["p95_ms"]
        for k in ("gallery_first_page", "gallery_deep_page", "gallery_filtered")
    )
    verdict = {
        "gallery_p95_ms": gallery_p95,
        "search_p95_ms": results["search"]["p95_ms"],
        "web_rss_mb": results["web_rss_mb"],
    }
    met = {k: verdict[k] < TARGETS[k] for k in TARGETS}
    report = {
        "benchmark": "gallery",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python -m bench.gallery " + " ".join(argv or sys.argv[1:]),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            # Other work on the machine inflates latencies; the load says how much there was.
            "load_average_1m_before_after": [load_before, round(os.getloadavg()[0], 2)],
        },
        "seed": {k: v for k, v in seeded.items() if k in ("seconds", "rows")},
        "results": results,
        "targets": TARGETS,
        "measured": verdict,
        "targets_met": met,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    summary = ", ".join(f"{k} {'met' if ok else 'MISSED'}" for k, ok in met.items())
    print(f"targets: {summary}")
    print(f"wrote {RESULTS.relative_to(ROOT)}")
    return 0 if all(met.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
