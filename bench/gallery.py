"""Gallery benchmark: up to a million jobs across 20 people in 2 teams, measured over HTTP.

Creates a database of its own on the PostgreSQL server (DATABASE_URL, else 127.0.0.1), migrates
it, seeds jobs, image rows and favourites with INSERT ... SELECT generate_series (secondary
indexes dropped during the load and built once after it: 1M jobs in about two minutes), starts
a real `studio web` process against it, and measures with an API token (as a script would):

- the gallery: first page, a deep page reached by its keyset cursor, model + person, favourites,
- prompt search: a common word, a word only the other team uses, two words, a middling and a
  rare invented word, common and rare quoted phrases, search with model, person (with and
  without matches) and favourites, and a deep page of a search; prompt history search,
- each as p50/p95 over sequential requests on a kept-alive connection, and the web process's
  resident memory after the runs. The load average is printed before and after, and each
  gallery case is also timed in-process (list_gallery alone), apart from HTTP and rendering.

Run: `.venv/bin/python -m bench.gallery --jobs 1000000` (`--requests`, `--keep` to keep the
database, `--database NAME` to measure a kept one again without seeding, `--only` some cases,
`--explain DIR` to write EXPLAIN (ANALYZE, BUFFERS) of every statement each gallery case runs).
Prints the figures and writes bench/results/gallery.json; the database is dropped.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
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
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import psutil
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Connection, Engine, make_url

from bench.people import seed_teams_and_people

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "gallery.json"
LOCAL_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
LOCAL_REDIS = "redis://127.0.0.1:6379/0"

TARGETS = {
    "gallery_p95_ms": 30.0,
    "search_p95_ms": 50.0,
    "prompts_search_p95_ms": 50.0,
    "web_rss_mb": 150.0,
}
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


def _sql_array(words: tuple[str, ...]) -> str:
    return "(ARRAY[" + ", ".join("'" + w.replace("'", "''") + "'" for w in words) + "])"


#: Syllables of the invented words; three of them make one of 64,000 words.
_SYLLABLES = (
    "ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "bu", "da", "fe", "go", "hi", "ju",
    "pe", "qui", "ro", "su", "ta", "un", "ve", "wa", "xo", "ya", "zu", "bri", "cle", "dro",
    "fla", "gri", "plo", "sna", "tre", "vle", "kru", "mon", "nel", "par", "tos",
)  # fmt: skip
_VOCABULARY = len(_SYLLABLES) ** 3


def invented_word(rank: int) -> str:
    """The invented word of this rank (0 is the most used), as the seed spells it."""
    n = len(_SYLLABLES)
    return _SYLLABLES[rank % n] + _SYLLABLES[rank // n % n] + _SYLLABLES[rank // n // n % n]


# Rank = floor(V * u^3) for u spread evenly over [0, 1) by the golden ratio: rank 0 is in ~2.5 %
# of prompts, the top 100 in ~12 %, and most of the 64,000 words in a handful each.
_RANK_SQL = (
    f"floor({_VOCABULARY} * power(((g * 0.6180339887498949) - floor(g * 0.6180339887498949)),"
    " 3))::int"
)
_RARE_WORD_SQL = " || ".join(
    f"{_sql_array(_SYLLABLES)}[1 + ({_RANK_SQL} / {len(_SYLLABLES) ** i}) % {len(_SYLLABLES)}]"
    for i in range(3)
)


def _drop_secondary_indexes(conn: Connection, tables: tuple[str, ...]) -> list[str]:
    """Drop the tables' indexes that back no constraint; returns their CREATE statements."""
    rows = conn.execute(
        text(
            "SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid) FROM pg_index i "
            "WHERE i.indrelid = ANY(CAST(:tables AS regclass[])) AND NOT EXISTS "
            "(SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)"
        ),
        {"tables": list(tables)},
    ).all()
    for name, _ in rows:
        conn.execute(text(f"DROP INDEX {name}"))
    return [definition for _, definition in rows]


@contextmanager
def bench_database(server_url: str, keep: bool, existing: str | None = None) -> Iterator[str]:
    """A new database on the server (or the `existing` one), dropped afterwards unless `keep`."""
    name = existing or f"studio_bench_{uuid.uuid4().hex[:8]}"
    if not re.fullmatch(r"studio_bench_[0-9a-z_]+", name):
        raise SystemExit(f"{name}: only databases this benchmark created can be reused")
    keep = keep or existing is not None
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    if existing is None:
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
    """Two teams, 20 people, `jobs` jobs (about 88 % with image rows); returns time and counts."""
    from app.security import hash_password

    password_hash = hash_password(secrets.token_urlsafe(16))
    started = time.perf_counter()
    with engine.begin() as conn:
        seed_teams_and_people(
            conn,
            per_team=PEOPLE_PER_TEAM,
            password_hash=password_hash,
            admin_email="person1@bench.example",
        )
        viewer = conn.execute(
            text("SELECT id, last_team_id FROM users WHERE email = 'person1@bench.example'")
        ).one()
        extra_columns, extra_values, extra_params = _other_job_columns()
        # Secondary indexes are built once after the load: maintaining a GIN index row by row
        # costs several times what one sorted build costs.
        indexes = _drop_secondary_indexes(conn, ("jobs", "images", "favourites"))
        conn.execute(text("SET LOCAL synchronous_commit = off"))
        # Job i belongs to team i % 2 ('Studio North' even, 'Studio South' odd) and person
        # (i / 2) % 10 of it, one every ~30 s back in time; statuses, models and prompt parts
        # cycle at co-prime periods so filters combine. A subject belongs to one team (its index
        # and i share parity), as teams have vocabularies of their own. Each prompt also names
        # its number (a phrase found once) and a word drawn from 64,000 invented ones with a
        # skewed (Zipf-like) draw: a few such words are in thousands of prompts, most in a few.
        conn.execute(
            text(
                f"""
                WITH people AS (
                    SELECT u.id AS user_id, u.last_team_id AS team_id,
                           row_number() OVER (PARTITION BY u.last_team_id ORDER BY u.email) - 1
                               AS n,
                           dense_rank() OVER (ORDER BY t.name) - 1 AS team_n
                    FROM users u JOIN teams t ON t.id = u.last_team_id
                ), series AS (
                    SELECT g,
                           now() - make_interval(secs => g * 30 + (g % 7)) AS at,
                           {_sql_array(SUBJECTS)}[1 + g % {len(SUBJECTS)}] || ' '
                             || {_sql_array(PLACES)}[1 + (g / 7) % {len(PLACES)}] || ', '
                             || {_sql_array(STYLES)}[1 + (g / 3) % {len(STYLES)}]
                             || ', detailed, soft light, number ' || g || ', '
                             || {_RARE_WORD_SQL} AS prompt,
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
                    created_at, project_id{extra_columns})
                SELECT gen_random_uuid(), p.team_id, p.user_id, s.status, s.model, s.prompt,
                       jsonb_build_object('prompt', s.prompt, 'width', 1024, 'height', 1024),
                       1024, 1024, s.g, 'jpeg', 0, 0, 3, 3, 4, 1, 0, s.g,
                       CASE s.status WHEN 'failed' THEN 'bfl_server_error'
                                     WHEN 'moderated' THEN 'request_moderated' END,
                       CASE WHEN s.status IN ('failed', 'moderated') THEN 'seeded' END,
                       s.at + interval '1 second', s.at + interval '1 second',
                       s.at + interval '9 seconds', s.at + interval '10 seconds', s.at,
                       (SELECT id FROM projects WHERE team_id = p.team_id AND is_default)
                       {extra_values}
                FROM series s
                JOIN people p ON p.team_n = s.g % 2 AND p.n = (s.g / 2) % {PEOPLE_PER_TEAM}
                ORDER BY s.g DESC
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
        conn.execute(text("SET LOCAL maintenance_work_mem = '512MB'"))
        for definition in indexes:
            conn.execute(text(definition))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))
    counts = {}
    with engine.connect() as conn:
        for table in ("jobs", "images", "users", "teams", "favourites"):
            counts[table] = conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()  # noqa: S608
    return {"seconds": round(time.perf_counter() - started, 1), "rows": counts}


def bench_identity(engine: Engine) -> dict[str, str]:
    """A new API token for the viewer (person1) and the ids the cases need."""
    from app.security import token_hash

    token = "fts_bench" + secrets.token_urlsafe(24)
    with engine.begin() as conn:
        viewer = conn.execute(
            text("SELECT id, last_team_id FROM users WHERE email = 'person1@bench.example'")
        ).one()
        colleagues = conn.execute(
            text("SELECT id FROM users WHERE last_team_id = :t ORDER BY email"), {"t": viewer[1]}
        ).all()
        conn.execute(
            text(
                "INSERT INTO api_tokens (id, user_id, team_id, name, prefix, token_hash, "
                "created_at) VALUES (gen_random_uuid(), :u, :t, 'bench', :p, :h, now())"
            ),
            {"u": viewer[0], "t": viewer[1], "p": token[:12], "h": token_hash(token)},
        )
    return {
        "token": token,
        "team_id": str(viewer[1]),
        "viewer_id": str(viewer[0]),
        "colleague_id": str(colleagues[3][0]),
    }


_SEEDED_JOB_COLUMNS = frozenset(
    [
        "id",
        "team_id",
        "user_id",
        "project_id",
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


def deep_cursor(engine: Engine, team_id: str, depth: int, q: str | None = None) -> str:
    """The keyset cursor a reader reaches after scrolling past `depth` tiles (of a search)."""
    from app.gallery.service import Cursor

    match = "AND prompt_tsv @@ websearch_to_tsquery('english', :q)" if q else ""
    with engine.connect() as conn:
        row = conn.execute(
            text(
                f"SELECT created_at, id FROM jobs WHERE team_id = :t AND deleted_at IS NULL "  # noqa: S608
                f"{match} ORDER BY created_at DESC, id DESC OFFSET :d LIMIT 1"
            ),
            {"t": team_id, "d": depth, "q": q},
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
    print(f"  {name:<30} p50 {figures['p50_ms']:7.2f} ms   p95 {figures['p95_ms']:7.2f} ms")
    return figures


@dataclass(frozen=True)
class Case:
    """One measured request shape: `target` says which figure it counts towards."""

    name: str
    label: str
    target: str  # "gallery", "search" or "" (measured, not a target)
    url: str
    #: The same request as list_gallery arguments, for EXPLAIN: filters and cursor.
    filters: dict[str, Any]
    after: str | None = None
    #: list_gallery's own time in-process (see time_service), filled in by the run.
    service: dict[str, float] = field(default_factory=dict)


def cases(engine: Engine, ids: dict[str, str], jobs: int) -> list[Case]:
    """The measured requests; cursors are read from the seeded rows."""
    team, colleague = ids["team_id"], ids["colleague_id"]
    deep = deep_cursor(engine, team, min(40_000, jobs // 2 - 100))
    deep_search = deep_cursor(engine, team, 2_000, q="lighthouse")
    # The viewer's team ('Studio North') has the even jobs: even subjects, even numbers.
    rare_word = invented_word(_VOCABULARY - 1_000)
    mid_word = invented_word(100)
    specs: list[tuple[str, str, str, dict[str, Any], str | None]] = [
        ("gallery_first_page", "gallery, first page", "gallery", {}, None),
        ("gallery_deep_page", "gallery, deep page (cursor)", "gallery", {}, deep),
        ("gallery_filtered", "gallery, model + person", "gallery",
         {"model": MODELS[1], "user": colleague}, None),
        ("gallery_favourites", "gallery, favourites", "gallery", {"favourites": "1"}, None),
        ("search_common_word", "search, common word", "search", {"q": "lighthouse"}, None),
        ("search_other_team_word", "search, other team's word", "search", {"q": "fox"}, None),
        ("search_two_words", "search, two words", "search", {"q": "owl watercolour"}, None),
        ("search_mid_word", f"search, mid word ({mid_word})", "search", {"q": mid_word}, None),
        ("search_rare_word", f"search, rare word ({rare_word})", "search", {"q": rare_word},
         None),
        ("search_common_phrase", "search, common phrase", "search", {"q": '"oil painting"'},
         None),
        ("search_rare_phrase", "search, rare phrase", "search", {"q": '"number 77778"'}, None),
        ("search_absent_phrase", "search, other team's phrase", "search",
         {"q": '"number 77777"'}, None),
        ("search_model", "search + model", "search", {"q": "teapot", "model": MODELS[2]}, None),
        ("search_person", "search + person", "search", {"q": "orchard", "user": colleague},
         None),
        ("search_person_none", "search + person, no match", "search",
         {"q": "lighthouse", "user": colleague}, None),
        ("search_favourites", "search + favourites", "search",
         {"q": "lighthouse", "favourites": "1"}, None),
        ("search_deep_page", "search, deep page (cursor)", "search", {"q": "lighthouse"},
         deep_search),
        ("prompt_history", "prompt history", "prompts", {}, None),
        ("prompt_history_search", "prompt history search", "prompts_search",
         {"q": "lighthouse"}, None),
        ("prompt_history_search_mid", f"prompt history, mid word ({mid_word})",
         "prompts_search", {"q": mid_word}, None),
        ("prompt_history_search_rare", f"prompt history, rare word ({rare_word})",
         "prompts_search", {"q": rare_word}, None),
        ("prompt_history_search_other", "prompt history, other team's word",
         "prompts_search", {"q": "fox"}, None),
        ("prompt_history_search_mine", "prompt history search, mine", "prompts_search",
         {"q": "lighthouse", "view": "mine"}, None),
    ]  # fmt: skip
    built = []
    for name, label, target, filters, after in specs:
        query = dict(filters)
        if after:
            query["after"] = after
        path = (
            "/prompts"
            if name.startswith("prompt_history")
            else ("/gallery/more" if after else "/gallery")
        )
        url = path + ("?" + urlencode(query) if query else "")
        built.append(Case(name, label, target, url, filters, after))
    return built


def _run_case(db: Any, case: Case, team: uuid.UUID, viewer: uuid.UUID) -> None:
    """The service call behind one case: list_gallery, or prompt_history for /prompts."""
    from app.gallery.service import list_gallery, parse_filters
    from app.prompts.service import prompt_history

    if case.name.startswith("prompt_history"):
        mine = case.filters.get("view") == "mine"
        prompt_history(db, team, q=case.filters.get("q") or None, user_id=viewer if mine else None)
        return
    list_gallery(
        db,
        team_id=team,
        viewer_id=viewer,
        filters=parse_filters(**case.filters),
        after=case.after,
    )


def explain_cases(url: str, ids: dict[str, str], selected: list[Case], out: Path) -> None:
    """Write EXPLAIN (ANALYZE, BUFFERS) of every statement each gallery case runs to `out`.

    The cases run through list_gallery itself; each statement it sends is captured and run
    again under EXPLAIN in the same transaction (settings it changes are replayed as sent).
    """
    from sqlalchemy import event
    from sqlalchemy.orm import Session

    out.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url)
    team, viewer = uuid.UUID(ids["team_id"]), uuid.UUID(ids["viewer_id"])
    for case in selected:
        captured: list[tuple[str, Any]] = []
        with engine.connect() as conn:

            def capture(
                _c: Any,
                _cur: Any,
                statement: str,
                parameters: Any,
                *_: Any,
                into: list[Any] = captured,
            ) -> None:
                into.append((statement, parameters))

            event.listen(conn, "before_cursor_execute", capture)
            with Session(bind=conn) as db:
                _run_case(db, case, team, viewer)
            event.remove(conn, "before_cursor_execute", capture)
            conn.rollback()
            lines = [f"-- {case.label}: {case.url}", ""]
            raw = conn.connection.dbapi_connection
            assert raw is not None
            cursor = raw.cursor()
            for statement, parameters in captured:
                if not statement.lstrip().upper().startswith(("SELECT", "WITH")):
                    cursor.execute(statement, parameters)
                    lines += [statement, ""]
                    continue
                cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters)
                lines += [statement, ""] + [r[0] for r in cursor.fetchall()] + [""]
            cursor.close()
            raw.rollback()
        (out / f"{case.name}.txt").write_text("\n".join(lines) + "\n")
    engine.dispose()
    print(f"wrote plans to {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")


def time_service(url: str, ids: dict[str, str], selected: list[Case], runs: int) -> None:
    """p50/p95 of list_gallery itself (queries and row building, no HTTP or page), per case.

    On a shared machine the HTTP figures carry everyone's load; these say what the queries
    cost on the same run.
    """
    from sqlalchemy.orm import Session

    engine = create_engine(url)
    team, viewer = uuid.UUID(ids["team_id"]), uuid.UUID(ids["viewer_id"])
    print(f"timing list_gallery in-process ({runs} calls per case)")
    for case in selected:
        timings = []
        for i in range(runs + 5):
            with Session(engine) as db:
                started = time.perf_counter()
                _run_case(db, case, team, viewer)
                if i >= 5:  # the first calls warm the connection and the driver's statements
                    timings.append((time.perf_counter() - started) * 1000)
        timings.sort()
        case.service.update(
            p50_ms=round(statistics.median(timings), 2),
            p95_ms=round(timings[int(0.95 * (len(timings) - 1))], 2),
        )
        print(
            f"  {case.label:<30} p50 {case.service['p50_ms']:7.2f} ms   "
            f"p95 {case.service['p95_ms']:7.2f} ms"
        )
    engine.dispose()


def _always(url: str) -> Callable[[int], str]:
    return lambda _i: url


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000, help="jobs to seed")
    parser.add_argument("--requests", type=int, default=200, help="timed requests per case")
    parser.add_argument("--keep", action="store_true", help="keep the benchmark database")
    parser.add_argument(
        "--database", help="measure an existing benchmark database (kept with --keep) unseeded"
    )
    parser.add_argument(
        "--explain", type=Path, help="write EXPLAIN (ANALYZE, BUFFERS) of each case to this folder"
    )
    parser.add_argument("--only", help="comma-separated case names to run (default: all)")
    args = parser.parse_args(argv)

    from app.cli import migrate_database
    from app.embedded import free_port

    load_before = [round(x, 2) for x in os.getloadavg()]
    print(f"load average (1, 5, 15 min): {load_before}")
    server = os.environ.get("DATABASE_URL") or LOCAL_POSTGRES
    server = server.replace("postgresql://", "postgresql+psycopg://", 1)
    data_dir = Path(tempfile.mkdtemp(prefix="studio-bench-gallery-"))
    with bench_database(server, args.keep, args.database) as url:
        print(f"migrating {make_url(url).database}")
        migrate_database(url)
        engine = create_engine(url)
        if args.database:
            with engine.connect() as conn:
                jobs = conn.execute(text("SELECT count(*) FROM jobs")).scalar_one()
            seeded: dict[str, Any] = {"seconds": 0, "rows": {"jobs": jobs}}
            print(f"reusing {jobs:,} jobs")
        else:
            print(f"seeding {args.jobs:,} jobs")
            seeded = seed(engine, args.jobs)
            print(f"  seeded in {seeded['seconds']} s: {seeded['rows']}")
            jobs = args.jobs
        ids = bench_identity(engine)
        selected = cases(engine, ids, jobs)
        if args.only:
            wanted = set(args.only.split(","))
            selected = [c for c in selected if c.name in wanted]
        engine.dispose()
        if args.explain:
            explain_cases(url, ids, selected, args.explain)
        time_service(url, ids, selected, args.requests)

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
                # The web process refuses the built-in development key.
                "SECRET_KEY": os.environ.get("SECRET_KEY") or secrets.token_urlsafe(48),
            }
        )
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        port = free_port()
        proc = start_web(env, port, data_dir / "web.log")
        results: dict[str, Any] = {}
        try:
            headers = {"Authorization": f"Bearer {ids['token']}"}
            with httpx.Client(
                base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=30
            ) as client:
                print(f"measuring over HTTP ({args.requests} requests per case)")
                for case in selected:
                    results[case.name] = measure(
                        client, case.label, _always(case.url), args.requests
                    )
                    results[case.name]["url"] = case.url
                    if case.service:
                        results[case.name]["service_p50_ms"] = case.service["p50_ms"]
                        results[case.name]["service_p95_ms"] = case.service["p95_ms"]
            rss_mb = psutil.Process(proc.pid).memory_info().rss / 2**20
            for child in psutil.Process(proc.pid).children(recursive=True):
                rss_mb += child.memory_info().rss / 2**20
            results["web_rss_mb"] = round(rss_mb, 1)
            print(f"  {'web process RSS':<30} {rss_mb:7.1f} MB")
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
            shutil.rmtree(data_dir, ignore_errors=True)

    def worst(target: str) -> float | None:
        figures = [results[c.name]["p95_ms"] for c in selected if c.target == target]
        return max(figures) if figures else None

    verdict = {
        "gallery_p95_ms": worst("gallery"),
        "search_p95_ms": worst("search"),
        "prompts_search_p95_ms": worst("prompts_search"),
        "web_rss_mb": results["web_rss_mb"],
    }
    met = {k: verdict[k] is not None and verdict[k] < TARGETS[k] for k in TARGETS}
    load_after = [round(x, 2) for x in os.getloadavg()]
    print(f"load average (1, 5, 15 min): {load_after}")
    report = {
        "benchmark": "gallery",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python -m bench.gallery " + " ".join(argv or sys.argv[1:]),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            # Other work on the machine inflates latencies; the load says how much there was.
            "load_average_before_after": [load_before, load_after],
        },
        "seed": seeded,
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
