"""Idempotency-Key on job creation: one key and body queue (and reserve) once, ever."""

from __future__ import annotations

import threading
import uuid

from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.costs.models import Reservation
from app.jobs.models import Job
from app.main import create_app
from app.projects.service import Changer, create_project
from tests.api.conftest import Caller, MakeCaller, assert_error

BODY = {"model": "flux-2-pro", "prompt": "a paper boat on a pond", "params": {"width": 512}}


def _jobs_of(db: Session, caller: Caller) -> int:
    return (
        db.scalar(select(func.count()).select_from(Job).where(Job.user_id == caller.person.user.id))
        or 0
    )


def _held_for(db: Session, caller: Caller) -> int:
    return (
        db.scalar(
            select(func.count())
            .select_from(Reservation)
            .where(Reservation.user_id == caller.person.user.id)
        )
        or 0
    )


def test_same_key_same_body_returns_the_same_jobs(
    client: TestClient, make_caller: MakeCaller, committed_db: Session
) -> None:
    caller = make_caller()
    headers = {**caller.headers, "Idempotency-Key": "order-1"}
    first = client.post("/api/v1/jobs", json={**BODY, "count": 2}, headers=headers)
    assert first.status_code == 201, first.text
    assert first.json()["replayed"] is False
    again = client.post("/api/v1/jobs", json={**BODY, "count": 2}, headers=headers)
    assert again.status_code == 200, again.text
    assert again.json()["replayed"] is True
    assert again.headers["Idempotent-Replayed"] == "true"
    ids = [j["id"] for j in first.json()["jobs"]]
    assert [j["id"] for j in again.json()["jobs"]] == ids and len(ids) == 2
    assert _jobs_of(committed_db, caller) == 2
    assert _held_for(committed_db, caller) == 2  # nothing reserved (charged) a second time

    # Without a key, the same body is a new request.
    fresh = client.post("/api/v1/jobs", json={**BODY, "count": 2}, headers=caller.headers)
    assert fresh.status_code == 201
    assert _jobs_of(committed_db, caller) == 4


def test_same_key_different_body_is_422(client: TestClient, make_caller: MakeCaller) -> None:
    caller = make_caller()
    headers = {**caller.headers, "Idempotency-Key": "order-2"}
    assert client.post("/api/v1/jobs", json=BODY, headers=headers).status_code == 201
    changed = {**BODY, "prompt": "a paper boat on a lake"}
    error = assert_error(
        client.post("/api/v1/jobs", json=changed, headers=headers), 422, "idempotency_key_reused"
    )
    assert error["fields"] == [
        {"field": "Idempotency-Key", "message": "already used with a different request body"}
    ]


def test_same_key_for_another_project_is_422_and_creates_nothing(
    client: TestClient, make_caller: MakeCaller, committed_db: Session
) -> None:
    caller = make_caller()
    changer = Changer(
        team_id=caller.team.id, user_id=caller.person.user.id, email=caller.person.user.email
    )
    client_a = create_project(committed_db, changer, name="Client A")
    client_b = create_project(committed_db, changer, name="Client B")
    committed_db.commit()
    headers = {**caller.headers, "Idempotency-Key": "order-projects"}
    in_a = {**BODY, "project_id": str(client_a.id)}
    first = client.post("/api/v1/jobs", json=in_a, headers=headers)
    assert first.status_code == 201, first.text
    again = client.post("/api/v1/jobs", json=in_a, headers=headers)
    assert again.status_code == 200 and again.json()["replayed"] is True
    for other in ({**BODY, "project_id": str(client_b.id)}, BODY):
        error = assert_error(
            client.post("/api/v1/jobs", json=other, headers=headers), 422, "idempotency_key_reused"
        )
        assert error["fields"][0]["field"] == "Idempotency-Key"
    assert _jobs_of(committed_db, caller) == 1
    assert _held_for(committed_db, caller) == 1
    project = committed_db.scalar(
        select(Job.project_id).where(Job.user_id == caller.person.user.id)
    )
    assert project == client_a.id


def test_keys_belong_to_one_person(
    client: TestClient, make_caller: MakeCaller, committed_db: Session
) -> None:
    first, second = make_caller(), make_caller()
    for caller in (first, second):
        headers = {**caller.headers, "Idempotency-Key": "shared-looking-key"}
        assert client.post("/api/v1/jobs", json=BODY, headers=headers).status_code == 201
        assert _jobs_of(committed_db, caller) == 1


def test_a_refused_request_does_not_burn_the_key(
    client: TestClient, make_caller: MakeCaller
) -> None:
    caller = make_caller()
    headers = {**caller.headers, "Idempotency-Key": "order-3"}
    bad = {**BODY, "params": {"width": 500}}
    assert client.post("/api/v1/jobs", json=bad, headers=headers).status_code == 422
    assert client.post("/api/v1/jobs", json=BODY, headers=headers).status_code == 201


def test_concurrent_duplicates_create_once(make_caller: MakeCaller, committed_db: Session) -> None:
    caller = make_caller()
    headers = {**caller.headers, "Idempotency-Key": f"race-{uuid.uuid4()}"}
    app = create_app()
    barrier = threading.Barrier(6)
    results: list[tuple[int, list[str]]] = []
    lock = threading.Lock()

    def send() -> None:
        with TestClient(app, base_url="https://testserver") as own_client:
            barrier.wait()
            response = own_client.post("/api/v1/jobs", json={**BODY, "count": 3}, headers=headers)
            with lock:
                results.append(
                    (response.status_code, [j["id"] for j in response.json().get("jobs", [])])
                )

    threads = [threading.Thread(target=send) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    statuses = sorted(status for status, _ in results)
    assert statuses == [200] * 5 + [201], results
    assert len({tuple(ids) for _, ids in results}) == 1
    assert _jobs_of(committed_db, caller) == 3
    assert _held_for(committed_db, caller) == 3


def test_keys_are_forgotten_after_a_day(committed_db: Session) -> None:
    from datetime import timedelta

    from app.api.idempotency import KEEP_KEYS_FOR, purge_expired_keys
    from app.db import utcnow
    from app.jobs.models import IdempotencyRecord
    from tests.factories import make_person

    person = make_person(committed_db)
    now = utcnow()
    for key, age in (("old-key", KEEP_KEYS_FOR + timedelta(minutes=1)), ("new-key", timedelta())):
        committed_db.add(
            IdempotencyRecord(
                user_id=person.user.id,
                key=key,
                team_id=person.team.id,
                request_hash="0" * 64,
                job_ids=[],
                created_at=now - age,
            )
        )
    committed_db.commit()

    assert purge_expired_keys(committed_db, now=now) == 1
    committed_db.commit()
    left = committed_db.scalars(
        select(IdempotencyRecord.key).where(IdempotencyRecord.user_id == person.user.id)
    ).all()
    assert left == ["new-key"]
