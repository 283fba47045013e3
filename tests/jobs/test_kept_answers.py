"""BFL's answers kept in Redis: applied once by whoever comes first, and never guessed at.

The worker and the sweeper may both apply the same answer (the worker retrying through an
outage, the sweeper finding the kept copy); the guarded transition lets exactly one of them
move the job and write its ledger row.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from app.costs.models import Charge
from app.db import utcnow
from app.embedded import free_port
from app.jobs import answers, outcomes, submission, sweeper
from app.jobs.models import JobStatus
from app.settings import get_settings
from tests.pipeline_support import job_rows, submitting_job


def _charges(db: Session, job_id: uuid.UUID) -> list[Decimal]:
    db.expire_all()
    return list(db.scalars(select(Charge.credits).where(Charge.job_id == job_id)))


def _answer(bfl_task_id: str = "task-kept") -> answers.KeptAnswer:
    return answers.KeptAnswer(
        bfl_task_id, "https://api.bfl.ai/v1/get_result?id=x", Decimal("3"), utcnow()
    )


def test_sweeper_applies_a_kept_answer_then_the_worker_s_retry_changes_nothing(
    committed_db: Session, engine: Engine
) -> None:
    job = submitting_job(committed_db, prompt="kept answer")
    answer = _answer()
    assert answers.keep(job.id, answer)
    assert answers.find([job.id]) == {job.id: answer}

    report = sweeper.sweep()
    assert (report.answers_applied, report.submissions_reconciled) == (1, 0)
    (pending,) = job_rows(engine, [job.id])
    assert (pending.status, pending.bfl_task_id, pending.cost_credits) == (
        JobStatus.PENDING,
        "task-kept",
        Decimal("3"),
    )
    assert pending.polling_url == answer.polling_url
    assert pending.submitted_at == answer.accepted_at
    assert _charges(committed_db, job.id) == [Decimal("3")]
    assert answers.find([job.id]) == {}  # dropped once PostgreSQL holds it

    # The worker's own write comes second: the job has moved on, nothing is charged again.
    outcome = submission.record_acceptance(job.id, answer, get_settings())
    assert outcome is outcomes.Outcome.LOST_RACE
    assert _charges(committed_db, job.id) == [Decimal("3")]
    assert job_rows(engine, [job.id])[0].status == JobStatus.PENDING


def test_worker_applies_first_then_a_leftover_copy_is_ignored_by_the_sweeper(
    committed_db: Session, engine: Engine
) -> None:
    job = submitting_job(committed_db, prompt="kept answer")
    answer = _answer("task-first")
    assert (
        submission.record_acceptance(job.id, answer, get_settings()) is outcomes.Outcome.SUBMITTED
    )
    # A copy left behind (dropping it failed) must not apply a second time.
    assert answers.keep(job.id, answer)
    later = utcnow() + timedelta(seconds=get_settings().SUBMITTING_STALE_S + 1)
    report = sweeper.sweep(now=later)
    assert (report.answers_applied, report.submissions_reconciled) == (0, 0)
    (pending,) = job_rows(engine, [job.id])
    assert (pending.status, pending.bfl_task_id) == (JobStatus.PENDING, "task-first")
    assert _charges(committed_db, job.id) == [Decimal("3")]


def test_a_stale_submission_with_no_answer_ends_unknown_and_says_what_happened(
    committed_db: Session, engine: Engine
) -> None:
    job = submitting_job(committed_db, prompt="kept answer")
    assert sweeper.sweep().submissions_reconciled == 0  # not stale yet
    later = utcnow() + timedelta(seconds=get_settings().SUBMITTING_STALE_S + 1)
    assert sweeper.sweep(now=later).submissions_reconciled == 1
    (done,) = job_rows(engine, [job.id])
    assert (done.status, done.error_code, done.bfl_task_id) == (
        JobStatus.FAILED,
        "submission_unknown",
        None,
    )
    credits = f"{job.estimated_credits.normalize():f}"
    assert done.error_message == (
        "The request was sent to BFL but no usable answer came back (nothing within "
        f"{get_settings().SUBMITTING_STALE_S} s; the worker sending it may have stopped). BFL "
        f"may have accepted and charged it (about {credits} credits), so it was not resent, "
        "to avoid paying twice. No image can arrive for this job; Retry makes a new one."
    )
    assert _charges(committed_db, job.id) == []


def test_with_redis_unreadable_a_stale_submission_is_not_given_up(
    committed_db: Session, engine: Engine, settings_env: pytest.MonkeyPatch
) -> None:
    job = submitting_job(committed_db, prompt="kept answer")
    later = utcnow() + timedelta(seconds=get_settings().SUBMITTING_STALE_S + 1)
    working_redis = get_settings().redis_url
    # Nothing listens there: the kept answers cannot be read, so nobody can say none came.
    settings_env.setenv("REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    get_settings.cache_clear()
    assert sweeper.sweep(now=later).submissions_reconciled == 0
    assert job_rows(engine, [job.id])[0].status == JobStatus.SUBMITTING
    settings_env.setenv("REDIS_URL", working_redis)
    get_settings.cache_clear()
    assert sweeper.sweep(now=later).submissions_reconciled == 1


def test_without_redis_the_answer_goes_to_the_journal_and_the_sweeper_applies_it(
    committed_db: Session, engine: Engine, settings_env: pytest.MonkeyPatch
) -> None:
    job = submitting_job(committed_db, prompt="kept answer")
    other = submitting_job(committed_db, prompt="still waiting")
    settings_env.setenv("REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    get_settings.cache_clear()
    journal = answers.journal_path()
    journal.parent.mkdir(parents=True, exist_ok=True)
    journal.write_text('{"job_id": "torn')  # a crashed append leaves half a line
    with journal.open("a") as handle:
        handle.write("\n")
    answer = _answer("task-journal")
    assert answers.keep(job.id, answer)  # Redis refused; the journal took it
    assert answers.find_in_journal([job.id, other.id]) == {job.id: answer}

    # Redis is still unreadable: the journal's answer is applied all the same, while the
    # stale job without one is left alone (its answer may be in Redis).
    later = utcnow() + timedelta(seconds=get_settings().SUBMITTING_STALE_S + 1)
    report = sweeper.sweep(now=later)
    assert (report.answers_applied, report.submissions_reconciled) == (1, 0)
    pending, waiting = job_rows(engine, [job.id, other.id])
    assert (pending.status, pending.bfl_task_id) == (JobStatus.PENDING, "task-journal")
    assert waiting.status == JobStatus.SUBMITTING
    assert _charges(committed_db, job.id) == [Decimal("3")]
    # Applied entries leave the journal; a second sweep applies nothing again.
    assert answers.find_in_journal([job.id]) == {}
    assert sweeper.sweep(now=later).answers_applied == 0
    assert _charges(committed_db, job.id) == [Decimal("3")]
