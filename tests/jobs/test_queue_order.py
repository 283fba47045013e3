"""Queue control against the real claim query: pause, team pause, front, back, fairness, the
queue view's positions, batch cancel and retry, permissions and the audit log."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from app.audit.models import AuditEntry
from app.auth.models import Role
from app.db import utcnow
from app.jobs import dispatch
from app.jobs.models import Job, JobStatus
from app.jobs.queue import Caller, Move, cancel_batch, move_batch, move_job, pause_team
from app.jobs.queue import retry_batch as retry_whole_batch
from app.jobs.queue_view import team_queue
from app.jobs.service import JobError, create_jobs
from app.settings import Settings, get_settings
from tests.factories import Person, make_person, make_team

pytestmark = pytest.mark.pipeline


def _queue(db: Session, person: Person, count: int = 1, prompt: str = "a red fox") -> list[Job]:
    jobs = create_jobs(
        db,
        user_id=person.user.id,
        team_id=person.team.id,
        model="flux-2-pro",
        params={"prompt": prompt, "width": 512, "height": 512},
        count=count,
    )
    db.flush()
    return jobs


def _caller(person: Person) -> Caller:
    return Caller(
        user_id=person.user.id,
        team_id=person.team.id,
        is_manager=person.role in (Role.MANAGER, Role.ADMIN),
        email=person.user.email,
    )


def _settings(cap: int = 100) -> Settings:
    return get_settings().model_copy(update={"BFL_MAX_ACTIVE_TASKS": cap})


def _later() -> datetime:
    return utcnow() + timedelta(seconds=1)


def _claim_all(db: Session, settings: Settings) -> list[Job]:
    claimed = []
    while (job := dispatch.claim_next(db, settings, _later())[0]) is not None:
        claimed.append(job)
    return claimed


def _age(db: Session, jobs: list[Job], seconds: int) -> None:
    """Make jobs look queued `seconds` ago (order in line is by that time)."""
    for job in jobs:
        db.execute(
            text("UPDATE jobs SET created_at = now() - make_interval(secs => :s) WHERE id = :id"),
            {"s": seconds, "id": job.id},
        )


def test_a_paused_job_is_never_claimed_until_resumed(db: Session) -> None:
    person = make_person(db)
    paused, other = _queue(db, person, count=2)
    move_job(db, _caller(person), paused.id, Move.PAUSE)
    assert [j.id for j in _claim_all(db, _settings())] == [other.id]
    move_job(db, _caller(person), paused.id, Move.RESUME)
    assert [j.id for j in _claim_all(db, _settings())] == [paused.id]


def test_a_paused_team_sends_nothing_new_while_other_teams_go_on(db: Session) -> None:
    manager = make_person(db, role=Role.MANAGER)
    member = make_person(db, manager.team)
    elsewhere = make_person(db, make_team(db))
    mine = _queue(db, member, count=2)
    (theirs,) = _queue(db, elsewhere)
    pause_team(db, _caller(manager), paused=True)
    assert [j.id for j in _claim_all(db, _settings())] == [theirs.id]
    view = team_queue(db, _settings(), team_id=manager.team.id, now=utcnow())
    assert {e.reason for e in view.entries} == {"team_paused"}
    assert view.paused_at is not None and view.paused_by == manager.user.name
    pause_team(db, _caller(manager), paused=False)
    assert {j.id for j in _claim_all(db, _settings())} == {j.id for j in mine}
    actions = db.scalars(
        select(AuditEntry.action).where(AuditEntry.team_id == manager.team.id)
    ).all()
    assert sorted(actions) == ["queue.team.pause", "queue.team.resume"]


def test_a_managers_front_wins_over_round_robin(db: Session) -> None:
    manager = make_person(db, role=Role.MANAGER)
    busy, idle = make_person(db, manager.team), make_person(db, manager.team)
    early = _queue(db, idle, count=2)
    _age(db, early, 60)
    *_, last = _queue(db, busy, count=5)
    # busy already has a job at BFL, so round-robin alone would serve idle first.
    (at_bfl,) = _queue(db, busy)
    db.execute(text("UPDATE jobs SET status = 'pending' WHERE id = :id"), {"id": at_bfl.id})
    move_job(db, _caller(manager), last.id, Move.FRONT)
    claimed = _claim_all(db, _settings())
    assert claimed[0].id == last.id
    # Then turns as usual: idle (fewer at BFL) before busy's other jobs.
    assert claimed[1].id == early[0].id
    entry = db.scalars(select(AuditEntry).where(AuditEntry.action == "queue.job.front")).one()
    assert entry.target_id == str(last.id) and entry.actor_id == manager.user.id


def test_back_reorders_only_the_persons_own_line_and_the_job_still_ages(db: Session) -> None:
    team = make_team(db)
    ann, bob = make_person(db, team), make_person(db, team)
    a1, a2, a3 = _queue(db, ann, count=3)
    _age(db, [a1, a2, a3], 120)
    (b1,) = _queue(db, bob)
    _age(db, [b1], 60)
    move_job(db, _caller(ann), a1.id, Move.BACK)
    # Queued after the move: the moved job still goes before it (nobody starves).
    (a4,) = _queue(db, ann, prompt="later")
    order = [j.id for j in _claim_all(db, _settings())]
    assert order == [a2.id, b1.id, a3.id, a1.id, a4.id]
    # A member moving their own job is no manager action: nothing audited.
    assert db.scalars(select(AuditEntry).where(AuditEntry.team_id == team.id)).all() == []


def test_members_cannot_front_or_touch_anothers_jobs_and_other_teams_are_not_found(
    db: Session,
) -> None:
    team = make_team(db)
    ann, bob = make_person(db, team), make_person(db, team)
    outsider = make_person(db, make_team(db), role=Role.ADMIN)
    (job,) = _queue(db, ann)
    with pytest.raises(JobError) as front:
        move_job(db, _caller(ann), job.id, Move.FRONT)
    assert front.value.code == "forbidden"
    for move in (Move.PAUSE, Move.BACK, Move.RESUME):
        with pytest.raises(JobError) as other:
            move_job(db, _caller(bob), job.id, move)
        assert other.value.code == "forbidden"
    with pytest.raises(JobError) as missing:
        move_job(db, _caller(outsider), job.id, Move.PAUSE)
    assert missing.value.code == "not_found"
    with pytest.raises(JobError) as team_pause:
        pause_team(db, _caller(ann), paused=True)
    assert team_pause.value.code == "forbidden"


def test_queue_view_positions_are_the_order_the_dispatcher_claims(db: Session) -> None:
    manager = make_person(db, role=Role.MANAGER)
    people = [make_person(db, manager.team) for _ in range(3)]
    jobs = []
    for n, person in enumerate(people):
        batch = _queue(db, person, count=3 + n)
        _age(db, batch, 100 - n * 10)
        jobs += batch
    move_job(db, _caller(manager), jobs[-1].id, Move.FRONT)
    move_job(db, _caller(people[0]), jobs[0].id, Move.BACK)
    move_job(db, _caller(people[1]), jobs[4].id, Move.PAUSE)
    settings = _settings(cap=2)
    view = team_queue(db, settings, team_id=manager.team.id, now=utcnow())
    placed = [e for e in view.entries if e.position is not None]
    assert [e.position for e in placed] == list(range(1, len(jobs)))
    assert view.entries[-1].job.id == jobs[4].id and view.entries[-1].reason == "paused"
    assert [e.reason for e in placed[:2]] == ["starting", "starting"]
    assert placed[0].job.id == jobs[-1].id
    assert {e.reason for e in placed[2:]} <= {"fair_share", "account_cap"}
    starts = [e.estimated_start for e in placed]
    assert all(s is not None for s in starts) and starts == sorted(starts)  # type: ignore[type-var]
    claimed = _claim_all(db, _settings())
    assert [j.id for j in claimed] == [e.job.id for e in placed]


def test_cancel_a_batch_cancels_its_queued_jobs_and_leaves_those_at_bfl(db: Session) -> None:
    manager = make_person(db, role=Role.MANAGER)
    owner = make_person(db, manager.team)
    batch = _queue(db, owner, count=4)
    db.execute(text("UPDATE jobs SET status = 'pending' WHERE id = :id"), {"id": batch[0].id})
    assert batch[0].batch_id is not None
    done = cancel_batch(db, _caller(manager), batch[0].batch_id)
    assert set(done.changed) == {j.id for j in batch[1:]} and done.unchanged == [batch[0].id]
    statuses = {
        j.id: j.status for j in db.scalars(select(Job).where(Job.batch_id == batch[0].batch_id))
    }
    assert statuses[batch[0].id] == JobStatus.PENDING
    assert {statuses[j.id] for j in batch[1:]} == {JobStatus.CANCELLED}
    with pytest.raises(JobError) as again:
        cancel_batch(db, _caller(owner), batch[0].batch_id)
    assert again.value.code == "not_cancellable"
    assert db.scalars(select(AuditEntry.action)).all() == ["queue.batch.cancel"]
    retried = retry_whole_batch(db, _caller(owner), batch[0].batch_id)
    assert len(retried) == 3 and len({j.batch_id for j in retried}) == 1
    assert {j.retry_of_id for j in retried} == {j.id for j in batch[1:]}
    assert [j.batch_index for j in retried] == [0, 1, 2]


def test_moving_a_batch_to_the_back_keeps_its_own_order(db: Session) -> None:
    person = make_person(db)
    first = _queue(db, person, count=3)
    _age(db, first, 30)
    second = _queue(db, person, count=2, prompt="second")
    assert first[0].batch_id is not None
    outcome = move_batch(db, _caller(person), first[0].batch_id, Move.BACK)
    assert set(outcome.changed) == {j.id for j in first}
    order = [j.id for j in _claim_all(db, _settings())]
    assert order == [j.id for j in second] + [j.id for j in first]
