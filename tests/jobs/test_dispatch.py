"""Claiming under the cap: fair turns between people, the cap across workers, per-model caps."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from app.db import utcnow
from app.emulator import EmulatorServer
from app.jobs import dispatch, messages, state
from app.jobs.messages import SUBMIT_NEXT
from app.jobs.models import Job, JobStatus
from app.jobs.service import create_jobs
from app.settings import get_settings
from tests.factories import make_person, make_team
from tests.pipeline_support import (
    WorkerProcess,
    assert_at_most_one_post,
    pipeline_env,
    queue_jobs,
    wait_for_terminal,
)

pytestmark = pytest.mark.pipeline


def _create(db: Session, person, **kwargs):  # type: ignore[no-untyped-def]
    params = kwargs.pop("params", {"prompt": "a red fox", "width": 512, "height": 512})
    return create_jobs(
        db,
        user_id=person.user.id,
        team_id=person.team.id,
        model=kwargs.pop("model", "flux-2-pro"),
        params=params,
        **kwargs,
    )


def test_claim_respects_the_cap_and_serves_users_fairly(db: Session) -> None:
    settings = get_settings().model_copy(update={"BFL_MAX_ACTIVE_TASKS": 3})
    team = make_team(db)
    heavy, light = make_person(db, team), make_person(db, team)
    _create(db, heavy, count=10)
    (single,) = _create(db, light)
    now = utcnow() + timedelta(seconds=1)

    claimed = []
    for _ in range(5):
        job, _room = dispatch.claim_next(db, settings, now)
        if job is None:
            break
        claimed.append(job)
    # The cap stops claiming at 3, and the light user's job is among them although the
    # heavy user queued ten before it.
    assert len(claimed) == 3
    assert single.id in {j.id for j in claimed}


def test_claim_skips_jobs_in_back_off_and_models_at_their_own_cap(db: Session) -> None:
    settings = get_settings()
    person = make_person(db)
    (waiting,) = _create(db, person)
    db.execute(
        text("UPDATE jobs SET not_before = now() + interval '1 hour' WHERE id = :id"),
        {"id": waiting.id},
    )
    kontext = _create(db, person, model="flux-kontext-max", params={"prompt": "edit"}, count=8)
    claimed = []
    while True:
        job, _ = dispatch.claim_next(db, settings, utcnow())
        if job is None:
            break
        claimed.append(job.id)
    assert waiting.id not in claimed
    # flux-kontext-max has a per-model cap of 6 in the catalogue.
    assert len(claimed) == 6
    assert set(claimed) <= {j.id for j in kontext}


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
                # At BFL: claimed or pending, and BFL has not said Ready (a Ready job's image
                # may still be being stored, but its slot is free).
                active = conn.execute(
                    text(
                        "SELECT count(*) FROM jobs WHERE status IN ('submitting', 'pending')"
                        " AND bfl_ready_at IS NULL"
                    )
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
    # BFL's own count agrees: a slot given back at Ready (before the image is stored) never
    # lets a fifth task start while four run.
    assert 1 <= emulator.service.peak_active_tasks() <= cap
    assert emulator.service.account_cap_refusals() == 0
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


def test_no_worker_process_waits_while_bfl_works(
    worker: WorkerProcess, emulator: EmulatorServer, committed_db: Session, engine: Engine
) -> None:
    # The module's worker has two processes and the cap is 4. Were a process held while BFL
    # works on its task, no more than two tasks could be at BFL at once: four means a
    # submission returns as soon as BFL answers, and the wait is a poll message for later.
    emulator.configure(latency_mean_s=2.0, latency_jitter_s=0.0)
    person = make_person(committed_db)
    committed_db.commit()
    peak = 0
    stop = threading.Event()

    def watch() -> None:
        nonlocal peak
        with engine.connect() as conn:
            while not stop.is_set():
                active = conn.execute(
                    text("SELECT count(*) FROM jobs WHERE status = 'pending'")
                ).scalar_one()
                conn.rollback()
                peak = max(peak, active)
                time.sleep(0.005)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    jobs = queue_jobs(committed_db, person.user.id, person.team.id, prompt="not held", count=4)
    done = wait_for_terminal(engine, [j.id for j in jobs], timeout=60)
    stop.set()
    watcher.join()
    assert all(j.status == JobStatus.READY for j in done)
    assert peak == 4, f"only {peak} tasks were at BFL at once with two worker processes"
    assert_at_most_one_post(emulator, done)


def test_a_task_bfl_reports_ready_frees_its_slot_before_its_image_is_stored(db: Session) -> None:
    # Cap 1: the first job is at BFL, so nothing else may be claimed; once BFL says Ready
    # (release_slot) the next job is claimed although the first is still being stored.
    settings = get_settings().model_copy(update={"BFL_MAX_ACTIVE_TASKS": 1})
    person = make_person(db)
    first, second = _create(db, person, count=2)
    now = utcnow() + timedelta(seconds=1)
    job, _ = dispatch.claim_next(db, settings, now)
    assert job is not None and job.id == first.id
    assert state.mark_pending(
        db,
        first.id,
        bfl_task_id="task-1",
        polling_url=None,
        cost_credits=Decimal("3"),
        next_poll_at=now,
    )
    assert dispatch.claim_next(db, settings, now)[0] is None

    messages.discard_pending(db)
    assert state.release_slot(db, first.id, bfl_ready_at=now)
    # Once only: a second poll of the same Ready task changes nothing and wakes nobody.
    assert [m.task for m in messages.pending_messages(db)] == [SUBMIT_NEXT]
    assert not state.release_slot(db, first.id, bfl_ready_at=now + timedelta(seconds=1))
    assert len(messages.pending_messages(db)) == 1

    job, _ = dispatch.claim_next(db, settings, now)
    assert job is not None and job.id == second.id
    # Storing the first image ends it `ready` without waking a dispatcher a second time,
    # and keeps the moment BFL said Ready.
    messages.discard_pending(db)
    ready = state.mark_ready(
        db, first.id, result_seed=7, bfl_ready_at=now + timedelta(seconds=2), slot_released=True
    )
    assert ready is not None and ready.status == JobStatus.READY
    assert ready.bfl_ready_at == now
    assert [m.task for m in messages.pending_messages(db)] == []
