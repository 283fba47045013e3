"""Ended sessions are deleted by an hourly beat task, and only ended ones."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.auth import PURGE_SESSIONS_TASK
from app.auth.models import AuthSession
from app.auth.service import purge_ended_sessions, start_session
from app.db import utcnow
from app.settings import get_settings
from tests.factories import make_person


def _three_sessions(db: Session) -> tuple[str, str, str]:
    """A live session, one idle past the idle timeout, one past its absolute lifetime."""
    person = make_person(db)
    now = utcnow()
    idle = timedelta(minutes=get_settings().SESSION_IDLE_MINUTES)
    _, live = start_session(db, person.user)
    _, idled = start_session(db, person.user)
    _, expired = start_session(db, person.user)
    db.execute(
        update(AuthSession)
        .where(AuthSession.token_hash == idled.token_hash)
        .values(last_seen_at=now - idle - timedelta(seconds=1))
    )
    db.execute(
        update(AuthSession)
        .where(AuthSession.token_hash == expired.token_hash)
        .values(expires_at=now - timedelta(seconds=1))
    )
    return live.token_hash, idled.token_hash, expired.token_hash


def _remaining(db: Session, hashes: tuple[str, ...]) -> set[str]:
    return set(db.scalars(select(AuthSession.token_hash).where(AuthSession.token_hash.in_(hashes))))


def test_purge_deletes_idle_and_expired_sessions_only(db: Session) -> None:
    live, idled, expired = _three_sessions(db)
    assert purge_ended_sessions(db) == 2
    assert _remaining(db, (live, idled, expired)) == {live}
    # Nothing more to do the second time.
    assert purge_ended_sessions(db) == 0


def test_purge_counts_time_from_the_given_moment(db: Session) -> None:
    live, _, _ = _three_sessions(db)
    later = utcnow() + timedelta(hours=get_settings().SESSION_MAX_HOURS + 1)
    assert purge_ended_sessions(db, now=later) == 3
    assert _remaining(db, (live,)) == set()


def test_the_purge_runs_hourly_from_beat(committed_db: Session) -> None:
    from app.celery_app import app
    from worker import auth_tasks

    entries = [e for e in app.conf.beat_schedule.values() if e["task"] == PURGE_SESSIONS_TASK]
    assert len(entries) == 1 and entries[0]["schedule"] == 3600
    assert "worker.auth_tasks" in app.conf.include
    assert app.tasks[PURGE_SESSIONS_TASK].name == auth_tasks.purge_sessions.name

    # The task body commits through its own session, as a worker would run it.
    live, idled, expired = _three_sessions(committed_db)
    committed_db.commit()
    assert auth_tasks.purge_sessions() == 2
    committed_db.expire_all()
    assert _remaining(committed_db, (live, idled, expired)) == {live}
