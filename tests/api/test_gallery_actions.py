"""The gallery's browser actions over the API: favourite, unfavourite, delete and vary a job."""

from __future__ import annotations

import base64
import uuid

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.auth.models import Role
from app.costs.models import Budget, Reservation
from app.db import utcnow
from app.jobs.models import Favourite, Job, JobStatus
from app.jobs.service import JobError, vary_job
from tests.api.conftest import (
    Caller,
    MakeCaller,
    assert_error,
    make_job,
    make_ready_job,
    picture,
    sign_in,
)


def _favourites(db: Session, job_id: uuid.UUID) -> list[uuid.UUID]:
    db.expire_all()
    return list(db.scalars(select(Favourite.user_id).where(Favourite.job_id == job_id)))


def _jobs_of(db: Session, caller: Caller) -> int:
    count = db.scalar(
        select(func.count()).select_from(Job).where(Job.user_id == caller.person.user.id)
    )
    return count or 0


def _listed(client: TestClient, caller: Caller, **query: object) -> list[str]:
    response = client.get("/api/v1/jobs", params=query, headers=caller.headers)
    assert response.status_code == 200, response.text
    return [j["id"] for j in response.json()["items"]]


# --- favourites ---------------------------------------------------------------------------


def test_favourite_on_and_off_are_idempotent_and_personal(
    client: TestClient, make_caller: MakeCaller, committed_db: Session
) -> None:
    alice = make_caller()
    bob = make_caller(team=alice.team)
    job = make_job(committed_db, bob)
    path = f"/api/v1/jobs/{job.id}/favourite"

    for _ in range(2):
        marked = client.put(path, headers=alice.headers)
        assert marked.status_code == 200, marked.text
        assert marked.json()["id"] == str(job.id) and marked.json()["favourite"] is True
    assert _favourites(committed_db, job.id) == [alice.person.user.id]
    assert client.get(f"/api/v1/jobs/{job.id}", headers=alice.headers).json()["favourite"]
    assert _listed(client, alice, favourites="true") == [str(job.id)]
    # Alice's mark is hers: Bob sees his own (unmarked) state and an empty favourites list.
    assert not client.get(f"/api/v1/jobs/{job.id}", headers=bob.headers).json()["favourite"]
    assert _listed(client, bob, favourites="true") == []

    client.put(path, headers=bob.headers)
    for _ in range(2):
        unmarked = client.delete(path, headers=alice.headers)
        assert unmarked.status_code == 200, unmarked.text
        assert unmarked.json()["favourite"] is False
    assert _favourites(committed_db, job.id) == [bob.person.user.id]
    assert _listed(client, alice, favourites="true") == []


def test_favourite_of_an_unknown_job_is_404(client: TestClient, make_caller: MakeCaller) -> None:
    caller = make_caller()
    missing = f"/api/v1/jobs/{uuid.uuid4()}/favourite"
    assert_error(client.put(missing, headers=caller.headers), 404, "not_found")
    assert_error(client.delete(missing, headers=caller.headers), 404, "not_found")


def test_a_browser_session_needs_its_anti_forgery_token(
    client: TestClient, make_caller: MakeCaller, committed_db: Session
) -> None:
    caller = make_caller()
    job = make_job(committed_db, caller)
    csrf = sign_in(committed_db, client, caller.person)
    path = f"/api/v1/jobs/{job.id}/favourite"

    assert_error(client.put(path), 403, "csrf_failed")
    assert_error(client.post(f"/api/v1/jobs/{job.id}/vary"), 403, "csrf_failed")
    assert_error(client.delete(f"/api/v1/jobs/{job.id}"), 403, "csrf_failed")
    assert _favourites(committed_db, job.id) == []
    assert _jobs_of(committed_db, caller) == 1

    assert client.put(path, headers=csrf).json()["favourite"] is True
    assert _favourites(committed_db, job.id) == [caller.person.user.id]


# --- delete -------------------------------------------------------------------------------


def test_only_the_author_or_a_manager_may_delete(
    client: TestClient, make_caller: MakeCaller, committed_db: Session
) -> None:
    author = make_caller()
    teammate = make_caller(team=author.team)
    manager = make_caller(team=author.team, role=Role.MANAGER)
    first = make_job(committed_db, author, prompt="first")
    second = make_job(committed_db, author, prompt="second")

    assert_error(
        client.delete(f"/api/v1/jobs/{first.id}", headers=teammate.headers), 403, "forbidden"
    )
    assert str(first.id) in _listed(client, teammate)

    by_author = client.delete(f"/api/v1/jobs/{first.id}", headers=author.headers)
    assert by_author.status_code == 200, by_author.text
    assert by_author.json()["id"] == str(first.id) and by_author.json()["deleted_at"]
    by_manager = client.delete(f"/api/v1/jobs/{second.id}", headers=manager.headers)
    assert by_manager.status_code == 200, by_manager.text
    assert by_manager.json()["deleted_at"]

    # The rows stay (costs still add up), only hidden.
    committed_db.expire_all()
    for job in (first, second):
        row = committed_db.get(Job, job.id)
        assert row is not None and row.deleted_at is not None
    # Gone is gone: deleting again finds nothing.
    assert_error(
        client.delete(f"/api/v1/jobs/{first.id}", headers=author.headers), 404, "not_found"
    )


def test_a_deleted_job_is_not_found_anywhere(
    client: TestClient, make_caller: MakeCaller, committed_db: Session
) -> None:
    caller = make_caller()
    job, _ = make_ready_job(committed_db, caller)
    kept = make_job(committed_db, caller, prompt="a kept kite")
    assert client.put(f"/api/v1/jobs/{job.id}/favourite", headers=caller.headers).status_code == 200
    assert (
        client.get(f"/api/v1/images/{job.id}/original", headers=caller.headers).status_code == 200
    )

    deleted = client.delete(f"/api/v1/jobs/{job.id}", headers=caller.headers)
    assert deleted.status_code == 200, deleted.text

    for path in (
        f"/api/v1/jobs/{job.id}",
        f"/api/v1/images/{job.id}",
        f"/api/v1/images/{job.id}/original",
        f"/api/v1/images/{job.id}/thumbnail",
        f"/api/v1/prompts/{job.id}",
    ):
        assert_error(client.get(path, headers=caller.headers), 404, "not_found")
    for method, path in (
        ("PUT", f"/api/v1/jobs/{job.id}/favourite"),
        ("DELETE", f"/api/v1/jobs/{job.id}/favourite"),
        ("POST", f"/api/v1/jobs/{job.id}/vary"),
        ("POST", f"/api/v1/jobs/{job.id}/retry"),
    ):
        assert_error(client.request(method, path, headers=caller.headers), 404, "not_found")
    assert _listed(client, caller) == [str(kept.id)]
    assert _listed(client, caller, favourites="true") == []
    assert _listed(client, caller, q="fox") == []
    assert _jobs_of(committed_db, caller) == 2  # vary and retry queued nothing


# --- vary ---------------------------------------------------------------------------------


def test_vary_queues_the_same_request_with_a_new_seed(
    client: TestClient, make_caller: MakeCaller, committed_db: Session
) -> None:
    author = make_caller()
    teammate = make_caller(team=author.team)
    source = client.post(
        "/api/v1/jobs",
        json={
            "model": "flux-2-pro",
            "prompt": "a copper kettle",
            "params": {"width": 768, "height": 512, "seed": 42, "output_format": "png"},
            "reference_images": [base64.b64encode(picture()).decode()],
        },
        headers=author.headers,
    )
    assert source.status_code == 201, source.text
    [original] = source.json()["jobs"]

    # Any teammate may vary a job they can see; the new job is theirs.
    varied = client.post(f"/api/v1/jobs/{original['id']}/vary", headers=teammate.headers)
    assert varied.status_code == 201, varied.text
    assert varied.json()["replayed"] is False
    [job] = varied.json()["jobs"]
    assert job["id"] != original["id"] and job["status"] == "queued"
    assert job["user_id"] == str(teammate.person.user.id)
    assert job["seed"] != 42 and job["seed"] is not None
    for same in ("model", "prompt", "params", "width", "height", "output_format"):
        assert job[same] == original[same], same
    assert job["reference_count"] == 1
    assert job["retry_of_id"] is None

    committed_db.expire_all()
    before = committed_db.get(Job, uuid.UUID(original["id"]))
    after = committed_db.get(Job, uuid.UUID(job["id"]))
    assert before is not None and after is not None
    # The stored reference image is reused, not copied, and the worker will send it again.
    assert after.params["input_image"] == before.params["input_image"]
    assert after.params["seed"] == after.seed != before.seed
    assert {k: v for k, v in after.params.items() if k != "seed"} == {
        k: v for k, v in before.params.items() if k != "seed"
    }

    again = client.post(f"/api/v1/jobs/{original['id']}/vary", headers=teammate.headers)
    assert again.status_code == 201 and again.json()["jobs"][0]["id"] != job["id"]


def test_vary_honours_the_idempotency_key(
    client: TestClient, make_caller: MakeCaller, committed_db: Session
) -> None:
    caller = make_caller()
    first = make_job(committed_db, caller, status=JobStatus.READY)
    second = make_job(committed_db, caller, status=JobStatus.FAILED)
    headers = {**caller.headers, "Idempotency-Key": "vary-1"}

    made = client.post(f"/api/v1/jobs/{first.id}/vary", headers=headers)
    assert made.status_code == 201, made.text
    replay = client.post(f"/api/v1/jobs/{first.id}/vary", headers=headers)
    assert replay.status_code == 200, replay.text
    assert replay.json()["replayed"] is True
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert [j["id"] for j in replay.json()["jobs"]] == [j["id"] for j in made.json()["jobs"]]
    assert _jobs_of(committed_db, caller) == 3

    # One key names one request: another job, or a POST /jobs, cannot reuse it.
    other = client.post(f"/api/v1/jobs/{second.id}/vary", headers=headers)
    assert_error(other, 422, "idempotency_key_reused")
    create = client.post(
        "/api/v1/jobs", json={"model": "flux-2-pro", "prompt": "a kettle"}, headers=headers
    )
    assert_error(create, 422, "idempotency_key_reused")
    assert _jobs_of(committed_db, caller) == 3


def test_vary_over_budget_is_402_and_queues_nothing(
    client: TestClient, make_caller: MakeCaller, committed_db: Session
) -> None:
    caller = make_caller()
    job = make_job(committed_db, caller, status=JobStatus.READY)
    committed_db.add(Budget(team_id=caller.team.id, user_id=None, monthly_credits=1))
    committed_db.commit()

    response = client.post(f"/api/v1/jobs/{job.id}/vary", headers=caller.headers)
    error = assert_error(response, 402, "budget_exceeded")
    assert "budget" in str(error["message"])
    assert _jobs_of(committed_db, caller) == 1


def test_vary_job_refuses_a_job_of_another_team_or_a_deleted_one(
    make_caller: MakeCaller, committed_db: Session
) -> None:
    owner, stranger = make_caller(), make_caller()
    job = make_job(committed_db, owner)
    with pytest.raises(JobError) as refused:
        vary_job(committed_db, job, team_id=stranger.team.id, user_id=stranger.person.user.id)
    assert refused.value.code == "not_found"
    job.deleted_at = utcnow()
    with pytest.raises(JobError):
        vary_job(committed_db, job, team_id=owner.team.id, user_id=owner.person.user.id)
    committed_db.rollback()
    assert _jobs_of(committed_db, stranger) == 0


def test_deleting_a_queued_job_cancels_it_and_releases_its_budget(
    client: TestClient, make_caller: MakeCaller, committed_db: Session
) -> None:
    caller = make_caller()
    created = client.post(
        "/api/v1/jobs",
        json={"model": "flux-2-pro", "prompt": "a kite never flown", "params": {"width": 512}},
        headers=caller.headers,
    )
    assert created.status_code == 201, created.text
    job_id = created.json()["jobs"][0]["id"]

    assert client.delete(f"/api/v1/jobs/{job_id}", headers=caller.headers).status_code == 200

    committed_db.expire_all()
    row = committed_db.get(Job, uuid.UUID(job_id))
    assert row is not None
    assert (row.status, row.error_code) == ("cancelled", "cancelled")
    reservation = committed_db.get(Reservation, row.id)
    assert reservation is not None and reservation.state == "released"
