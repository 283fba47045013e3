"""The BFL account's shared state against the real database: outages, probes, 429s, caps."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import text
from sqlalchemy.orm import Session

from app.bfl.errors import RateLimited, RateLimitInfo
from app.db import utcnow
from app.jobs import account, dispatch, messages, state, sweeper
from app.jobs.models import Job, JobStatus
from app.jobs.service import create_jobs
from app.settings import Settings, get_settings
from tests.factories import make_person


def _settings(**changes: object) -> Settings:
    return get_settings().model_copy(update=changes)


def _queued(db: Session, count: int = 1) -> list[Job]:
    person = make_person(db)
    jobs: list[Job] = []
    while len(jobs) < count:
        jobs += create_jobs(
            db,
            user_id=person.user.id,
            team_id=person.team.id,
            model="flux-2-pro",
            params={"prompt": "a red fox", "width": 256, "height": 256},
            count=min(count - len(jobs), get_settings().MAX_BATCH_SIZE),
        )
    messages.discard_pending(db)
    return jobs


def _pending(db: Session, jobs: list[Job], now: datetime) -> None:
    for job in jobs:
        state.claim(db, job.id, now)
        state.mark_pending(
            db,
            job.id,
            bfl_task_id=f"task-{job.id}",
            polling_url=None,
            cost_credits=job.estimated_credits,
            next_poll_at=now + timedelta(seconds=1),
            now=now,
        )
    messages.discard_pending(db)


def test_an_outage_is_noticed_once_and_probed_by_one_dispatcher_at_a_time(db: Session) -> None:
    settings = _settings(BFL_PROBE_MAX_INTERVAL_S=5.0)
    now = utcnow()
    first_probe = account.note_unreachable(db, settings, "no connection", now)
    # A second worker failing a moment later joins the same outage: nothing moves.
    assert account.note_unreachable(db, settings, "HTTP 503", now + timedelta(seconds=0.5)) == (
        first_probe
    )
    row = account.peek(db)
    assert row is not None and row.outage_since == now and row.outage_reason == "HTTP 503"
    assert first_probe == now + timedelta(seconds=account.FIRST_PROBE_S)

    before = account.gate(db, settings, now + timedelta(seconds=0.5))
    assert (before.open, before.probe, before.retry_at) == (False, False, first_probe)
    due = first_probe + timedelta(seconds=0.01)
    probing = account.gate(db, settings, due)
    assert (probing.open, probing.probe) == (False, True)
    # The probe's lease keeps every other dispatcher from probing at the same time.
    other = account.gate(db, settings, due + timedelta(seconds=0.01))
    assert (other.open, other.probe) == (False, False)

    # Failed probes back off, doubling up to BFL_PROBE_MAX_INTERVAL_S.
    waits = []
    at = due
    for _ in range(8):
        over, next_probe = account.record_probe(
            db, settings, answered=False, reason="no connection", now=at
        )
        assert not over and next_probe is not None
        waits.append((next_probe - at).total_seconds())
        at = next_probe
    assert waits[0] < waits[2] <= 5.0
    assert max(waits) <= 5.0 and waits[-1] >= 5.0 * 0.75

    over, _ = account.record_probe(db, settings, answered=True, reason="ok", now=at)
    assert over
    assert account.gate(db, settings, at).open


def test_the_end_of_an_outage_clears_the_waits_it_set_on_every_queued_job(db: Session) -> None:
    settings = get_settings()
    jobs = _queued(db, count=3)
    now = utcnow()
    next_probe = account.note_unreachable(db, settings, "no connection", now)
    db.execute(
        text("UPDATE jobs SET not_before = :at WHERE id = ANY(:ids)"),
        {"at": next_probe + timedelta(minutes=5), "ids": [j.id for j in jobs]},
    )
    row = account.peek(db)
    assert row is not None
    assert account.next_try_at(jobs[0], row, now) is not None
    job, room = dispatch.claim_next(db, settings, now)
    assert (job, room) == (None, False)  # nothing is claimed during an outage

    account.record_probe(db, settings, answered=True, reason="ok", now=now)
    db.expire_all()
    assert [j.not_before for j in db.query(Job).filter(Job.id.in_([j.id for j in jobs]))] == [
        None
    ] * 3
    job, _room = dispatch.claim_next(db, settings, now)
    assert job is not None and job.id in {j.id for j in jobs}


def test_a_429_pauses_the_account_learns_the_cap_and_caps_retry_after(db: Session) -> None:
    settings = _settings(BFL_MAX_ACTIVE_TASKS=6, BFL_RETRY_AFTER_MAX_S=60.0)
    jobs = _queued(db, count=5)
    now = utcnow()
    _pending(db, jobs[:3], now)
    # BFL refuses the 4th although the studio's cap is 6: something else shares the account.
    until = account.note_rate_limited(db, settings, RateLimited("busy", retry_after=7200.0), now)
    assert until == now + timedelta(seconds=60)  # Retry-After honoured, but capped
    row = account.peek(db)
    assert row is not None and row.learned_cap == 3
    assert account.effective_cap(row, settings, now) == 3

    paused = account.gate(db, settings, now + timedelta(seconds=1))
    assert (paused.open, paused.retry_at) == (False, until)
    assert dispatch.claim_next(db, settings, now + timedelta(seconds=1)) == (None, False)

    # One of our tasks ends at BFL: the pause is over at once, under the learned cap.
    state.finish_unsuccessfully(
        db,
        jobs[0].id,
        expected=JobStatus.PENDING,
        target=JobStatus.FAILED,
        error_code="bfl_error",
        error_message="x",
    )
    messages.discard_pending(db)
    later = now + timedelta(seconds=2)
    opened = account.gate(db, settings, later)
    assert opened.open and opened.cap == 3
    job, room = dispatch.claim_next(db, settings, later)
    assert job is not None and not room  # 2 pending + this one = the learned 3
    assert dispatch.claim_next(db, settings, later) == (None, False)


def test_posts_accepted_while_bfl_refused_another_raise_what_was_learned(db: Session) -> None:
    # Four POSTs in flight at once; BFL refuses one while the others' answers are on the way.
    settings = _settings(BFL_MAX_ACTIVE_TASKS=6)
    jobs = _queued(db, count=4)
    now = utcnow()
    _pending(db, jobs[:1], now)
    account.note_rate_limited(db, settings, RateLimited("busy", retry_after=30), now)
    row = account.peek(db)
    assert row is not None and (row.learned_cap, row.active_at_rate_limit) == (1, 1)
    _pending(db, jobs[1:3], now)  # their answers arrive: BFL does run three of ours
    gate = account.gate(db, settings, now + timedelta(seconds=1))
    assert not gate.open and gate.cap == 3
    # The first of the three to end frees a slot: the pause ends then.
    state.finish_unsuccessfully(
        db,
        jobs[1].id,
        expected=JobStatus.PENDING,
        target=JobStatus.FAILED,
        error_code="bfl_error",
        error_message="x",
    )
    messages.discard_pending(db)
    assert account.gate(db, settings, now + timedelta(seconds=2)).open


def test_a_429_with_nothing_of_ours_running_waits_its_time(db: Session) -> None:
    # With no task of ours at BFL, none can end: only the (short) pause ends the wait.
    settings = _settings(BFL_MAX_ACTIVE_TASKS=4)
    _queued(db, count=2)
    now = utcnow()
    until = account.note_rate_limited(db, settings, RateLimited("busy"), now)
    assert until == now + timedelta(seconds=account.DEFAULT_RATE_LIMIT_PAUSE_S)
    assert not account.gate(db, settings, now + timedelta(seconds=1)).open
    gate = account.gate(db, settings, until + timedelta(seconds=0.01))
    assert gate.open and gate.cap == 1


def test_the_learned_cap_rises_by_one_after_each_quiet_while(db: Session) -> None:
    settings = _settings(BFL_MAX_ACTIVE_TASKS=5, BFL_CAP_RAISE_AFTER_S=30.0)
    jobs = _queued(db, count=2)
    now = utcnow()
    _pending(db, jobs, now)
    account.note_rate_limited(db, settings, RateLimited("busy", retry_after=1), now)
    assert account.gate(db, settings, now + timedelta(seconds=29)).cap == 2
    assert account.gate(db, settings, now + timedelta(seconds=31)).cap == 3
    assert account.gate(db, settings, now + timedelta(seconds=45)).cap == 3
    assert account.gate(db, settings, now + timedelta(seconds=62)).cap == 4
    # Back at the configured cap, nothing is learned any more.
    assert account.gate(db, settings, now + timedelta(seconds=200)).cap == 5
    row = account.peek(db)
    assert row is not None and row.learned_cap is None


def test_x_ratelimit_headers_feed_the_limiter(db: Session) -> None:
    settings = _settings(BFL_MAX_ACTIVE_TASKS=24, BFL_RETRY_AFTER_MAX_S=30.0)
    now = utcnow()
    account.note_rate_limit_headers(
        db, settings, RateLimitInfo(limit=10, remaining=0, reset_after_s=900.0), now
    )
    row = account.peek(db)
    assert row is not None and row.learned_cap == 10
    assert row.rate_limit_headers == {"limit": 10, "remaining": 0, "reset_after_s": 900.0}
    assert row.rate_limited_until == now + timedelta(seconds=30)  # Reset, capped
    status = account.status(db, settings, now)
    assert status.kind == "rate_limited" and status.next_try_at == row.rate_limited_until


def test_the_status_people_read_during_an_outage(db: Session) -> None:
    settings = get_settings()
    _queued(db, count=37)
    since = datetime(2026, 11, 30, 14, 2, 30, tzinfo=utcnow().tzinfo)
    account.note_unreachable(db, settings, "no connection", since)
    status = account.status(db, settings, since + timedelta(seconds=0.5))
    assert status.kind == "outage" and status.waiting == 37
    assert status.message.startswith("BFL unreachable since 14:02 UTC — 37 jobs waiting")
    assert status.as_dict()["state"] == "outage"


def test_no_countdown_exceeds_the_cap_whatever_a_caller_asks(db: Session) -> None:
    messages.discard_pending(db)
    messages.wake_dispatcher(db, countdown=7200)
    messages.schedule_poll(db, uuid.uuid4(), 3600)
    messages.wake_dispatcher(db, countdown=-5)
    countdowns = [m.countdown for m in messages.pending_messages(db)]
    messages.discard_pending(db)
    assert countdowns == [messages.MAX_COUNTDOWN_S, messages.MAX_COUNTDOWN_S, 0.0]
    from app.celery_app import VISIBILITY_TIMEOUT_S, app

    assert app.conf.broker_transport_options["visibility_timeout"] == VISIBILITY_TIMEOUT_S
    assert messages.MAX_COUNTDOWN_S < VISIBILITY_TIMEOUT_S / 10


def test_a_job_never_sent_within_the_queue_deadline_fails_uncharged(
    committed_db: Session,
) -> None:
    from app.costs.models import Reservation

    (job,) = _queued(committed_db)
    committed_db.commit()
    settings = get_settings()
    account.note_unreachable(committed_db, settings, "no connection", utcnow())
    committed_db.commit()
    later = utcnow() + timedelta(seconds=settings.QUEUE_DEADLINE_S + 1)
    assert sweeper.sweep(now=later).queue_expired == 1
    committed_db.expire_all()
    done = committed_db.get(Job, job.id)
    assert done is not None
    assert (done.status, done.error_code) == (JobStatus.FAILED, "queue_deadline")
    assert done.error_message == (
        "Not sent to BFL within 6 hours of being queued (BFL was unreachable). It was never "
        "sent and nothing was charged; retry it when BFL is back."
    )
    assert committed_db.get(Reservation, job.id).state == "released"  # type: ignore[union-attr]
