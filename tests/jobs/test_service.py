"""The job service and state machine against the real database, without a worker."""

from __future__ import annotations

import io
from decimal import Decimal

import pytest
from PIL import Image as PILImage
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from app.auth.models import Role
from app.costs.models import Budget, Reservation
from app.costs.service import BudgetExceeded
from app.db import utcnow
from app.errors import RequestInvalid
from app.jobs import messages, state
from app.jobs.errors import JobNotFound
from app.jobs.models import Job, JobStatus
from app.jobs.queries import team_job
from app.jobs.service import (
    STORED_PREFIX,
    JobError,
    cancel_job,
    create_jobs,
    retry_job,
)
from app.storage import get_storage
from tests.factories import make_person, make_team


def _png(size: tuple[int, int] = (32, 24)) -> bytes:
    buffer = io.BytesIO()
    PILImage.new("RGB", size, (200, 30, 30)).save(buffer, "PNG")
    return buffer.getvalue()


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


def test_a_batch_gets_consecutive_seeds_one_batch_id_and_an_estimate(db: Session) -> None:
    person = make_person(db)
    jobs = _create(
        db, person, params={"prompt": "a red fox", "seed": 41, "width": 512, "height": 512}, count=3
    )
    assert [j.seed for j in jobs] == [41, 42, 43]
    assert [j.params["seed"] for j in jobs] == [41, 42, 43]
    assert len({j.batch_id for j in jobs}) == 1
    assert [j.batch_index for j in jobs] == [0, 1, 2]
    assert all(j.status == JobStatus.QUEUED for j in jobs)
    assert all(j.estimated_credits == Decimal("3.00") for j in jobs)
    assert (jobs[0].width, jobs[0].height) == (512, 512)
    held = db.scalars(select(Reservation).where(Reservation.job_id.in_([j.id for j in jobs])))
    assert len(held.all()) == 3


def test_without_a_seed_each_job_records_its_own_random_seed(db: Session) -> None:
    jobs = _create(db, make_person(db), count=4)
    seeds = [j.seed for j in jobs]
    assert all(s is not None for s in seeds)
    assert len(set(seeds)) == 4


def test_field_errors_come_back_unchanged(db: Session) -> None:
    person = make_person(db)
    with pytest.raises(RequestInvalid) as caught:
        _create(db, person, params={"prompt": "", "width": 500, "height": 512})
    fields = {e.field for e in caught.value.errors}
    assert fields == {"prompt", "params.width"}


@pytest.mark.parametrize("count", [0, -1, 17, "3", True])
def test_count_out_of_range_is_an_error_on_the_count_field(db: Session, count: object) -> None:
    with pytest.raises(RequestInvalid) as caught:
        _create(db, make_person(db), count=count)
    assert [e.field for e in caught.value.errors] == ["count"]
    assert "1 to 16" in caught.value.errors[0].message


def test_callers_cannot_set_the_webhook(db: Session) -> None:
    with pytest.raises(RequestInvalid) as caught:
        _create(
            db,
            make_person(db),
            params={"prompt": "x", "webhook_url": "https://evil.example/hook"},
        )
    assert caught.value.errors[0].field == "params.webhook_url"


def test_budget_refusal_propagates_and_nothing_is_sent(db: Session) -> None:
    person = make_person(db)
    db.add(Budget(team_id=person.team.id, user_id=None, monthly_credits=Decimal("5")))
    db.flush()
    with pytest.raises(BudgetExceeded):
        _create(db, person, count=2)  # 2 x 3 credits > 5
    assert messages.pending_messages(db) == [] or all(
        m.task != messages.SUBMIT_NEXT for m in messages.pending_messages(db)
    )


def test_reference_images_are_stored_and_their_keys_put_in_params(db: Session) -> None:
    person = make_person(db)
    data = _png()
    (job,) = _create(db, person, reference_images=[data])
    value = job.params["input_image"]
    assert value.startswith(STORED_PREFIX + f"teams/{person.team.id}/references/")
    assert get_storage().get(value[len(STORED_PREFIX) :]) == data
    assert job.reference_count == 1
    # The estimate includes the reference image.
    assert job.estimated_credits == Decimal("4.50")


def test_a_reference_that_is_not_an_image_is_refused(db: Session) -> None:
    with pytest.raises(RequestInvalid) as caught:
        _create(db, make_person(db), reference_images=[b"not an image at all"])
    assert caught.value.errors[0].field == "reference_images"


def test_another_teams_stored_reference_is_refused(db: Session) -> None:
    other = make_person(db)
    (theirs,) = _create(db, other, reference_images=[_png()])
    me = make_person(db)
    with pytest.raises(RequestInvalid) as caught:
        _create(
            db,
            me,
            params={"prompt": "copy", "input_image": theirs.params["input_image"]},
        )
    assert caught.value.errors[0].field == "params.input_image"


def test_wakeups_are_sent_only_after_commit_and_dropped_on_rollback(engine) -> None:  # type: ignore[no-untyped-def]
    # A session of our own so commit and rollback are real.
    with Session(engine) as db:
        person = make_person(db)
        db.commit()
        _create(db, person, count=2)
        held = messages.pending_messages(db)
        assert [m.task for m in held] == [messages.SUBMIT_NEXT] * 2
        db.rollback()
        assert messages.pending_messages(db) == []
        db.execute(text("DELETE FROM memberships WHERE user_id = :u"), {"u": person.user.id})
        db.execute(text("DELETE FROM users WHERE id = :u"), {"u": person.user.id})
        db.execute(text("DELETE FROM teams WHERE id = :t"), {"t": person.team.id})
        db.commit()


def test_team_job_is_scoped_by_team(db: Session) -> None:
    person = make_person(db)
    (job,) = _create(db, person)
    stranger = make_person(db)
    assert team_job(db, team_id=person.team.id, job_id=job.id) is job
    with pytest.raises(JobNotFound) as caught:
        team_job(db, team_id=stranger.team.id, job_id=job.id)
    assert (caught.value.status_code, caught.value.code) == (404, "not_found")


def test_cancel_only_queued_jobs_and_only_own_or_as_manager(db: Session) -> None:
    team = make_team(db)
    owner = make_person(db, team)
    teammate = make_person(db, team)
    manager = make_person(db, team, Role.MANAGER)
    (job,) = _create(db, owner)

    with pytest.raises(JobError) as caught:
        cancel_job(db, job_id=job.id, team_id=team.id, user_id=teammate.user.id, is_manager=False)
    assert caught.value.code == "forbidden"

    done = cancel_job(db, job_id=job.id, team_id=team.id, user_id=manager.user.id, is_manager=True)
    assert done.status == JobStatus.CANCELLED
    assert done.error_code == "cancelled"
    assert done.finished_at is not None
    reservation = db.get(Reservation, job.id)
    assert reservation is not None and reservation.state == "released"

    with pytest.raises(JobError) as again:
        cancel_job(db, job_id=job.id, team_id=team.id, user_id=owner.user.id, is_manager=False)
    assert again.value.code == "not_cancellable"

    stranger = make_person(db)
    with pytest.raises(JobError) as hidden:
        cancel_job(
            db, job_id=job.id, team_id=stranger.team.id, user_id=stranger.user.id, is_manager=True
        )
    assert hidden.value.code == "not_found"


def test_a_job_already_sent_cannot_be_cancelled(db: Session) -> None:
    person = make_person(db)
    (job,) = _create(db, person)
    assert state.claim(db, job.id) is not None
    with pytest.raises(JobError) as caught:
        cancel_job(
            db, job_id=job.id, team_id=person.team.id, user_id=person.user.id, is_manager=False
        )
    assert caught.value.code == "not_cancellable"
    assert "already sent to BFL" in caught.value.message


def test_retry_makes_a_new_job_with_the_same_request(db: Session) -> None:
    person = make_person(db)
    (job,) = _create(
        db,
        person,
        params={"prompt": "again", "seed": 7, "width": 256, "height": 256},
        reference_images=[_png()],
    )
    with pytest.raises(JobError) as refused:
        retry_job(db, job_id=job.id, team_id=person.team.id, user_id=person.user.id)
    assert refused.value.code == "not_retryable"

    state.cancel(db, job.id)
    (again,) = retry_job(db, job_id=job.id, team_id=person.team.id, user_id=person.user.id)
    assert again.id != job.id
    assert again.retry_of_id == job.id
    assert again.params == job.params
    assert again.status == JobStatus.QUEUED


def test_transitions_are_guarded_and_happen_once(db: Session) -> None:
    (job,) = _create(db, make_person(db))
    assert state.claim(db, job.id) is not None
    # A second claim (a redelivered wake-up) finds the job no longer queued.
    assert state.claim(db, job.id) is None
    assert state.cancel(db, job.id) is None
    moved = state.mark_pending(
        db,
        job.id,
        bfl_task_id="task-1",
        polling_url=None,
        cost_credits=Decimal("3"),
        next_poll_at=utcnow(),
    )
    assert moved is not None and moved.status == JobStatus.PENDING
    assert (
        state.mark_pending(
            db,
            job.id,
            bfl_task_id="task-2",
            polling_url=None,
            cost_credits=Decimal("3"),
            next_poll_at=utcnow(),
        )
        is None
    )
    assert db.get(Job, job.id).bfl_task_id == "task-1"  # type: ignore[union-attr]
    with pytest.raises(state.IllegalTransition):
        state.finish_unsuccessfully(
            db,
            job.id,
            expected=JobStatus.PENDING,
            target=JobStatus.CANCELLED,
            error_code="x",
            error_message="x",
        )


def test_a_commit_sends_few_wakeups_however_big_the_batch(db: Session) -> None:
    # Each claim that leaves a slot free wakes the next worker, so two wake-ups fill the cap;
    # a batch of 16 sends no more, and neither does a second batch in the same transaction.
    person = make_person(db)
    _create(db, person, count=16)
    _create(db, person, count=16)
    immediate = [m for m in messages.pending_messages(db) if m.task == messages.SUBMIT_NEXT]
    assert len(immediate) == messages.MAX_WAKEUPS_PER_COMMIT
    # A wake-up for when a back-off ends is a different promise and is always sent.
    messages.wake_dispatcher(db, countdown=5.0)
    delayed = [m for m in messages.pending_messages(db) if m.countdown == 5.0]
    assert len(delayed) == 1


def test_a_late_answer_is_recorded_only_on_a_job_reconciled_as_unknown(db: Session) -> None:
    (job,) = _create(db, make_person(db))
    state.claim(db, job.id)
    # Still submitting: the answer goes through mark_pending, not here.
    assert state.note_late_acceptance(db, job.id, bfl_task_id="t", cost_credits=None) is None
    state.finish_unsuccessfully(
        db,
        job.id,
        expected=JobStatus.SUBMITTING,
        target=JobStatus.FAILED,
        error_code="bfl_rejected",
        error_message="x",
    )
    # Failed for a reason that proves BFL made no task: nothing to record.
    assert state.note_late_acceptance(db, job.id, bfl_task_id="t", cost_credits=None) is None
    assert db.get(Job, job.id).bfl_task_id is None  # type: ignore[union-attr]


def test_an_explicit_prompt_upsampling_off_is_kept_for_bfl(db: Session) -> None:
    person = make_person(db)
    params = {"prompt": "a paper lantern", "prompt_upsampling": False}
    (off,) = _create(db, person, model="flux-2-flex", params=params)
    (default,) = _create(db, person, model="flux-2-flex", params={"prompt": "a paper lantern"})
    # False is what BFL is sent (its own default for flex is on); unset takes that default.
    assert off.params["prompt_upsampling"] is False
    assert default.params["prompt_upsampling"] is True
    with pytest.raises(RequestInvalid) as caught:
        _create(db, person, params={"prompt": "x", "prompt_upsampling": False})
    assert caught.value.errors[0].message == "prompt_upsampling is not accepted by flux-2-pro"
