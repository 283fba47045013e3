"""Queue control with a real worker, Redis and the BFL emulator: pausing, a team pause,
front and back never break the account's cap, never send a paused job, and never POST a job
twice."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from app.auth.models import Role
from app.db import utcnow
from app.emulator import EmulatorServer
from app.jobs.models import JobStatus
from app.jobs.queue import Caller, Move, move_batch, move_job, pause_team
from tests.factories import Person, make_person
from tests.pipeline_support import (
    WorkerProcess,
    assert_at_most_one_post,
    job_rows,
    queue_jobs,
    wait_for_terminal,
)

pytestmark = pytest.mark.pipeline

CAP = 4  # BFL_MAX_ACTIVE_TASKS of the pipeline environment


def _caller(person: Person) -> Caller:
    return Caller(
        user_id=person.user.id,
        team_id=person.team.id,
        is_manager=person.role in (Role.MANAGER, Role.ADMIN),
        email=person.user.email,
    )


@contextmanager
def _peak_watch(engine: Engine) -> Iterator[list[int]]:
    """Yields [peak]: the most jobs holding a slot of the cap (submitting, or pending before
    BFL said Ready) seen while inside."""
    peak = [0]
    stop = threading.Event()

    def watch() -> None:
        with engine.connect() as conn:
            while not stop.is_set():
                active = conn.execute(
                    text(
                        "SELECT count(*) FROM jobs"
                        " WHERE status IN ('submitting', 'pending') AND bfl_ready_at IS NULL"
                    )
                ).scalar_one()
                conn.rollback()
                peak[0] = max(peak[0], active)
                time.sleep(0.005)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield peak
    finally:
        stop.set()
        watcher.join()


def test_pause_front_back_and_a_team_pause_keep_the_cap_and_one_post_per_job(
    worker: WorkerProcess, emulator: EmulatorServer, committed_db: Session, engine: Engine
) -> None:
    emulator.configure(latency_mean_s=0.5, latency_jitter_s=0.1)
    manager = make_person(committed_db, role=Role.MANAGER)
    ann = make_person(committed_db, manager.team)
    bob = make_person(committed_db, manager.team)
    committed_db.commit()
    with _peak_watch(engine) as peak:
        # The team's queue is paused before anything is queued: nothing may be sent.
        pause_team(committed_db, _caller(manager), paused=True)
        committed_db.commit()
        ann_jobs = queue_jobs(committed_db, ann.user.id, ann.team.id, prompt="ann", count=8)
        bob_jobs = queue_jobs(committed_db, bob.user.id, bob.team.id, prompt="bob", count=6)
        held = ann_jobs[:3]
        for job in held:
            move_job(committed_db, _caller(ann), job.id, Move.PAUSE)
        assert bob_jobs[0].batch_id is not None and ann_jobs[3].batch_id is not None
        move_batch(committed_db, _caller(manager), bob_jobs[0].batch_id, Move.FRONT)
        move_job(committed_db, _caller(ann), ann_jobs[3].id, Move.BACK)
        committed_db.commit()
        time.sleep(1.5)
        waiting = job_rows(engine, [j.id for j in ann_jobs + bob_jobs])
        assert {j.status for j in waiting} == {JobStatus.QUEUED}, "sent while the team paused"

        pause_team(committed_db, _caller(manager), paused=False)
        committed_db.commit()
        others = [j.id for j in ann_jobs[3:] + bob_jobs]
        done_others = wait_for_terminal(engine, others, timeout=90)
        still_held = job_rows(engine, [j.id for j in held])
        assert {j.status for j in still_held} == {JobStatus.QUEUED}, "a paused job was sent"
        resumed_at = utcnow()
        for job in held:
            move_job(committed_db, _caller(ann), job.id, Move.RESUME)
        committed_db.commit()
        done_held = wait_for_terminal(engine, [j.id for j in held], timeout=60)

    done = done_others + done_held
    assert all(j.status == JobStatus.READY for j in done), [j.error_code for j in done]
    assert 1 <= peak[0] <= CAP, f"peak of jobs at BFL was {peak[0]}"
    assert_at_most_one_post(emulator, done)
    assert all(j.claimed_at is not None and j.claimed_at >= resumed_at for j in done_held)
    # The manager's front: bob's batch was claimed before any of ann's jobs.
    claimed = sorted(done_others, key=lambda j: j.claimed_at)  # type: ignore[arg-type, return-value]
    first_ann = next(i for i, j in enumerate(claimed) if j.user_id == ann.user.id)
    assert first_ann >= len(bob_jobs), [j.prompt for j in claimed]
    # Ann's job moved back went after her other unpaused jobs.
    ann_order = [j.id for j in claimed if j.user_id == ann.user.id]
    assert ann_order[-1] == ann_jobs[3].id
