"""The pipeline end to end: a real worker process, real Postgres and Redis, the BFL emulator."""

from __future__ import annotations

import contextlib
import io
import json
import threading
import time
import uuid
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

import pytest
from PIL import Image as PILImage
from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session

from app.costs.models import Charge, Reservation
from app.emulator import EmulatorServer
from app.jobs import messages
from app.jobs.models import Image, Job, JobStatus
from app.jobs.service import create_jobs
from app.storage import get_storage
from tests.factories import make_person
from tests.pipeline_support import (
    WorkerProcess,
    job_rows,
    pipeline_env,
    queue_jobs,
    wait_for_terminal,
)

pytestmark = pytest.mark.pipeline


def posts_per_job(emulator: EmulatorServer, jobs: Iterable[Job]) -> dict[uuid.UUID, int]:
    """Accepted POSTs in the emulator's log for each job, matched by prompt and seed."""
    counts: dict[tuple[str, int], int] = {}
    for entry in emulator.submissions():
        key = (entry["payload"]["prompt"], entry["payload"].get("seed"))
        counts[key] = counts.get(key, 0) + 1
    return {j.id: counts.get((j.prompt, j.seed), 0) for j in jobs}


def assert_at_most_one_post(emulator: EmulatorServer, jobs: Iterable[Job]) -> None:
    extra = {job_id: n for job_id, n in posts_per_job(emulator, jobs).items() if n > 1}
    assert extra == {}, f"jobs POSTed more than once: {extra}"


def test_happy_path_stores_image_thumbnail_seed_cost_and_timings(
    worker: WorkerProcess, emulator: EmulatorServer, committed_db: Session, engine: Engine
) -> None:
    person = make_person(committed_db)
    committed_db.commit()
    jobs = queue_jobs(
        committed_db, person.user.id, person.team.id, prompt="a happy fox", count=2, seed=1234
    )
    done = wait_for_terminal(engine, [j.id for j in jobs], timeout=30)
    assert [j.status for j in done] == [JobStatus.READY, JobStatus.READY]
    storage = get_storage()
    for job in done:
        assert job.result_seed == job.seed
        assert job.cost_credits == Decimal("3.0000")
        assert job.bfl_id and job.error_code is None
        assert job.created_at <= job.claimed_at <= job.submitted_at  # type: ignore[operator]
        assert job.submitted_at <= job.bfl_ready_at <= job.finished_at  # type: ignore[operator]
        image = committed_db.scalars(select(Image).where(Image.job_id == job.id)).one()
        assert image.storage_key == f"teams/{person.team.id}/{job.id}/original.jpg"
        assert image.thumb_key == f"teams/{person.team.id}/{job.id}/thumb.webp"
        assert (image.width, image.height, image.content_type) == (256, 256, "image/jpeg")
        original = storage.get(image.storage_key)
        assert len(original) == image.size_bytes
        with PILImage.open(io.BytesIO(storage.get(image.thumb_key))) as thumb:
            assert thumb.format == "WEBP"
        charge = committed_db.scalars(select(Charge).where(Charge.job_id == job.id)).one()
        assert charge.credits == Decimal("3.0000")
        reservation = committed_db.get(Reservation, job.id)
        assert reservation is not None and reservation.state == "settled"
    assert list(posts_per_job(emulator, done).values()) == [1, 1]


FAILURES = [
    ("[[request-moderated]] a cat", JobStatus.MODERATED, "request_moderated", "moderation"),
    ("[[content-moderated]] a cat", JobStatus.MODERATED, "content_moderated", "moderation"),
    ("[[error]] a cat", JobStatus.FAILED, "bfl_error", "failed to generate"),
    ("[[not-found]] a cat", JobStatus.FAILED, "task_not_found", "no longer knows"),
    ("[[drop]] a cat", JobStatus.FAILED, "submission_unknown", "not resent"),
]


def test_every_task_failure_ends_in_a_clear_terminal_state(
    worker: WorkerProcess, emulator: EmulatorServer, committed_db: Session, engine: Engine
) -> None:
    person = make_person(committed_db)
    committed_db.commit()
    jobs = [
        queue_jobs(committed_db, person.user.id, person.team.id, prompt=prompt)[0]
        for prompt, *_ in FAILURES
    ]
    done = wait_for_terminal(engine, [j.id for j in jobs], timeout=30)
    for job, (prompt, status, code, words) in zip(done, FAILURES, strict=True):
        assert (job.status, job.error_code) == (status, code), prompt
        assert words in (job.error_message or ""), job.error_message
        assert job.finished_at is not None
    assert_at_most_one_post(emulator, done)
    # A dropped answer may have been charged: its budget hold stays; the others are released
    # or settled by what BFL reported.
    dropped = done[-1]
    assert committed_db.get(Reservation, dropped.id).state == "held"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("config", "code", "words"),
    [
        ({"credits": "0"}, "bfl_no_credits", "no credits left"),
        ({"api_key": "another-key"}, "bfl_auth", "ask an admin"),
        ({"error_rate_5xx": 1.0}, "bfl_server_error", "not resent"),
    ],
    ids=["402", "403", "5xx"],
)
def test_account_and_server_refusals_fail_the_job_without_a_second_post(
    worker: WorkerProcess,
    emulator: EmulatorServer,
    committed_db: Session,
    engine: Engine,
    config: dict[str, object],
    code: str,
    words: str,
) -> None:
    emulator.configure(**config)
    person = make_person(committed_db)
    committed_db.commit()
    (job,) = queue_jobs(committed_db, person.user.id, person.team.id, prompt=f"refused {code}")
    (done,) = wait_for_terminal(engine, [job.id], timeout=30)
    assert (done.status, done.error_code) == (JobStatus.FAILED, code)
    assert words in (done.error_message or "")
    assert committed_db.get(Reservation, job.id).state == "released"  # type: ignore[union-attr]
    assert committed_db.scalar(select(func.count()).select_from(Charge)) == 0


def test_a_request_bfl_rejects_fails_with_bfls_reason(
    worker: WorkerProcess, emulator: EmulatorServer, committed_db: Session, engine: Engine
) -> None:
    person = make_person(committed_db)
    committed_db.commit()
    # A request that passed our checks but that BFL refuses (422): simulate a catalogue that
    # is out of date by editing the stored request before the commit sends the wake-up.
    (job,) = create_jobs(
        committed_db,
        user_id=person.user.id,
        team_id=person.team.id,
        model="flux-2-pro",
        params={"prompt": "rejected", "width": 256, "height": 256},
    )
    job.params = {**job.params, "width": 250}
    committed_db.commit()
    (done,) = wait_for_terminal(engine, [job.id], timeout=30)
    assert (done.status, done.error_code) == (JobStatus.FAILED, "bfl_rejected")
    assert "width" in (done.error_message or "")


def test_a_result_that_expires_before_download_fails_clearly(
    worker: WorkerProcess, emulator: EmulatorServer, committed_db: Session, engine: Engine
) -> None:
    emulator.configure(result_ttl_s=0.001)
    person = make_person(committed_db)
    committed_db.commit()
    (job,) = queue_jobs(committed_db, person.user.id, person.team.id, prompt="too late")
    (done,) = wait_for_terminal(engine, [job.id], timeout=30)
    assert (done.status, done.error_code) == (JobStatus.FAILED, "result_expired")
    assert "expired" in (done.error_message or "")


def test_a_429_requeues_and_the_job_still_finishes_with_one_post(
    worker: WorkerProcess, emulator: EmulatorServer, committed_db: Session, engine: Engine
) -> None:
    # BFL's own cap (1) below the studio's (4): the account is shared with something else.
    emulator.configure(account_active_task_cap=1, latency_mean_s=0.3, latency_jitter_s=0.0)
    person = make_person(committed_db)
    committed_db.commit()
    jobs = queue_jobs(committed_db, person.user.id, person.team.id, prompt="crowded", count=3)
    done = wait_for_terminal(engine, [j.id for j in jobs], timeout=60)
    assert all(j.status == JobStatus.READY for j in done), [j.error_message for j in done]
    assert sum(j.requeues for j in done) >= 1
    assert_at_most_one_post(emulator, done)


def test_duplicate_messages_are_no_ops(
    worker: WorkerProcess, emulator: EmulatorServer, committed_db: Session, engine: Engine
) -> None:
    person = make_person(committed_db)
    committed_db.commit()
    jobs = queue_jobs(committed_db, person.user.id, person.team.id, prompt="twice", count=2)
    done = wait_for_terminal(engine, [j.id for j in jobs], timeout=30)
    polls_before = {j.id: j.poll_count for j in done}
    # Redeliver everything a finished job ever received: wake-ups and (forced) polls.
    duplicates = [messages.Message(messages.SUBMIT_NEXT, queue=messages.DISPATCH_QUEUE)] * 3
    for job in done:
        duplicates += [messages.poll_message(job.id), messages.poll_message(job.id, force=True)]
    assert messages.send_now(duplicates) == len(duplicates)
    time.sleep(2)
    again = job_rows(engine, [j.id for j in jobs])
    assert [j.status for j in again] == [JobStatus.READY] * 2
    assert {j.id: j.poll_count for j in again} == polls_before
    assert [j.finished_at for j in again] == [j.finished_at for j in done]
    assert committed_db.scalar(select(func.count()).select_from(Image)) == 2
    assert list(posts_per_job(emulator, again).values()) == [1, 1]


def test_the_cap_holds_across_two_workers_and_every_job_finishes(
    worker: WorkerProcess, emulator: EmulatorServer, committed_db: Session, engine: Engine
) -> None:
    # The module's worker plus a second one, both with BFL_MAX_ACTIVE_TASKS=4. The emulator
    # would accept 24 at once: only the studio's own cap can keep the peak down.
    cap = 4
    emulator.configure(latency_mean_s=0.4, latency_jitter_s=0.2)
    env = pipeline_env(emulator, BFL_MAX_ACTIVE_TASKS=str(cap))
    team_person = make_person(committed_db)
    others = [make_person(committed_db, team_person.team) for _ in range(2)]
    committed_db.commit()
    peak = 0
    stop = threading.Event()

    def watch() -> None:
        nonlocal peak
        with engine.connect() as conn:
            while not stop.is_set():
                active = conn.execute(
                    text("SELECT count(*) FROM jobs WHERE status IN ('submitting', 'pending')")
                ).scalar_one()
                conn.rollback()
                peak = max(peak, active)
                time.sleep(0.005)

    watcher = threading.Thread(target=watch, daemon=True)
    with WorkerProcess(env, concurrency=2, name="second-worker"):
        watcher.start()
        jobs: list[Job] = []
        for who in (team_person, *others):
            for _ in range(2):
                jobs += queue_jobs(committed_db, who.user.id, who.team.id, prompt="capped", count=5)
        done = wait_for_terminal(engine, [j.id for j in jobs], timeout=90)
        stop.set()
        watcher.join()
    assert len(done) == 30
    assert all(j.status == JobStatus.READY for j in done)
    assert 1 <= peak <= cap, f"peak of active jobs was {peak}"
    assert_at_most_one_post(emulator, done)


def test_a_teammates_single_image_is_not_stuck_behind_a_big_batch(
    worker: WorkerProcess, emulator: EmulatorServer, committed_db: Session, engine: Engine
) -> None:
    emulator.configure(latency_mean_s=0.3, latency_jitter_s=0.0)
    heavy = make_person(committed_db)
    light = make_person(committed_db, heavy.team)
    committed_db.commit()
    batch: list[Job] = []
    for _ in range(4):
        batch += queue_jobs(committed_db, heavy.user.id, heavy.team.id, prompt="bulk", count=15)
    (single,) = queue_jobs(committed_db, light.user.id, light.team.id, prompt="just one")
    done = wait_for_terminal(engine, [j.id for j in [*batch, single]], timeout=120)
    assert all(j.status == JobStatus.READY for j in done)
    order = sorted(done, key=lambda j: j.claimed_at)  # type: ignore[arg-type, return-value]
    position = [j.id for j in order].index(single.id)
    # The cap is 4, so the first 4 slots went to the batch before the single job existed;
    # the single job takes one of the next free slots, not the 61st.
    assert position <= 6, f"the single job was submitted {position + 1}th of 61"
    assert_at_most_one_post(emulator, done)


def _log_lines(process: WorkerProcess) -> list[dict[str, Any]]:
    lines = []
    for raw in process.log().splitlines():
        if raw.startswith("{"):
            with contextlib.suppress(ValueError):
                lines.append(json.loads(raw))
    return lines


def test_every_line_of_a_submission_carries_its_job_id(
    worker: WorkerProcess, emulator: EmulatorServer, committed_db: Session, engine: Engine
) -> None:
    person = make_person(committed_db)
    committed_db.commit()
    jobs = queue_jobs(committed_db, person.user.id, person.team.id, prompt="logged", count=3)
    done = wait_for_terminal(engine, [j.id for j in jobs], timeout=30)
    assert all(j.status == JobStatus.READY for j in done)
    lines = _log_lines(worker)
    for job in done:
        (submitted,) = [e for e in lines if e.get("bfl_task_id") == job.bfl_id]
        assert submitted["event"] == "bfl task submitted"
        assert (submitted.get("job_id"), submitted.get("task")) == (str(job.id), "jobs.submit_next")
        # Celery's own line for that task names the job too.
        (finished,) = [
            e
            for e in lines
            if e.get("task_id") == submitted["task_id"] and "succeeded" in str(e["event"])
        ]
        assert finished.get("job_id") == str(job.id)
    # A task's lines name only its own job: nothing is left over from the task before, and a
    # wake-up sent by the poll that finished job A does not bring A's id to the next wake-up.
    by_task: dict[str, list[dict[str, Any]]] = {}
    for e in lines:
        if e.get("task_id"):
            by_task.setdefault(e["task_id"], []).append(e)
    submitted_by = {e["task_id"]: e["job_id"] for e in lines if e.get("bfl_task_id")}
    idle = 0
    for task_id, task_lines in by_task.items():
        named = {e["job_id"] for e in task_lines if e.get("job_id")}
        outcome = next(
            (str(e["event"]) for e in task_lines if " succeeded in " in str(e["event"])), ""
        )
        if task_lines[0].get("task") != "jobs.submit_next":
            assert len(named) == 1, task_lines  # a poll names the job it polls
        elif outcome.endswith((": 'idle'", ": 'paused'", ": 'probed'")):
            # Nothing claimed: the queue was empty, or the account paused (or probed BFL).
            idle += outcome.endswith(": 'idle'")
            assert named == set(), task_lines
        else:
            # It claimed a job: its lines name that job only (the one it sent, if it did).
            assert len(named) == 1, task_lines
            assert named == {submitted_by.get(task_id, *named)}, task_lines
    assert idle >= 1, "no wake-up found the queue empty"
