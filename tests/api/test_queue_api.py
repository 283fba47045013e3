"""The queue over the API: positions and reasons, pause/resume/front/back of jobs, batches and
the team, batch cancel and retry, with roles enforced and the audit log written."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.audit.models import AuditEntry
from app.auth.models import Role
from app.jobs import messages
from app.jobs.models import Job, JobStatus
from tests.api.conftest import MakeCaller, assert_error

BODY = {"model": "flux-2-pro", "prompt": "a paper crane", "params": {"width": 512}}


def test_queue_lists_the_teams_jobs_with_positions_reasons_and_estimates(
    client: TestClient, make_caller: MakeCaller, committed_db: Session
) -> None:
    ann = make_caller()
    manager = make_caller(ann.person.team, Role.MANAGER)
    outsider = make_caller()
    made = client.post("/api/v1/jobs", json={**BODY, "count": 3}, headers=ann.headers)
    assert made.status_code == 201, made.text
    jobs = made.json()["jobs"]
    batch_id = jobs[0]["batch_id"]
    client.post("/api/v1/jobs", json=BODY, headers=outsider.headers)
    messages.discard_pending(committed_db)

    queue = client.get("/api/v1/queue", headers=manager.headers)
    assert queue.status_code == 200, queue.text
    body = queue.json()
    assert [i["job_id"] for i in body["items"]] == [j["id"] for j in jobs]
    assert {i["owner"] for i in body["items"]} == {ann.person.user.name}
    assert all(i["position"] and i["estimated_start_at"] for i in body["items"])
    assert set(body["reasons"]) >= {"paused", "team_paused", "account_cap", "fair_share"}
    assert body["paused"] is False and body["active_task_cap"] >= 1

    # A member pauses their own job: it drops out of line and says why.
    paused = client.post(f"/api/v1/jobs/{jobs[0]['id']}/queue/pause", headers=ann.headers)
    assert paused.status_code == 200, paused.text
    items = client.get("/api/v1/queue", headers=ann.headers).json()["items"]
    last = items[-1]
    assert last["job_id"] == jobs[0]["id"] and last["reason"] == "paused"
    assert last["position"] is None and last["paused"] is True

    # Front is for managers; members get 403 with the shared error shape.
    assert_error(
        client.post(f"/api/v1/jobs/{jobs[2]['id']}/queue/front", headers=ann.headers),
        403,
        "forbidden",
    )
    front = client.post(f"/api/v1/batches/{batch_id}/queue/front", headers=manager.headers)
    assert front.status_code == 200, front.text
    # Every queued job of the batch moves (the paused one stays paused, now at the front).
    assert set(front.json()["changed"]) == {j["id"] for j in jobs}
    assert front.json()["unchanged"] == []
    items = client.get("/api/v1/queue", headers=ann.headers).json()["items"]
    assert all(i["front"] for i in items) and items[-1]["paused"] is True

    # The whole team's queue: members may not, managers may; audited.
    assert_error(client.post("/api/v1/queue/pause", headers=ann.headers), 403, "forbidden")
    team = client.post("/api/v1/queue/pause", headers=manager.headers)
    assert team.status_code == 200 and team.json()["paused"] is True
    assert {i["reason"] for i in team.json()["items"]} == {"paused", "team_paused"}
    resumed = client.post("/api/v1/queue/resume", headers=manager.headers)
    assert resumed.json()["paused"] is False
    messages.discard_pending(committed_db)

    actions = committed_db.scalars(
        select(AuditEntry.action)
        .where(AuditEntry.team_id == ann.person.team.id)
        .order_by(AuditEntry.at, AuditEntry.action)
    ).all()
    assert sorted(actions) == ["queue.batch.front", "queue.team.pause", "queue.team.resume"]

    # Another team sees none of it.
    other = client.get("/api/v1/queue", headers=outsider.headers).json()["items"]
    assert {i["owner"] for i in other} == {outsider.person.user.name}
    assert_error(
        client.get(f"/api/v1/batches/{batch_id}", headers=outsider.headers), 404, "not_found"
    )


def test_cancel_and_retry_a_whole_batch(
    client: TestClient, make_caller: MakeCaller, committed_db: Session
) -> None:
    owner = make_caller()
    teammate = make_caller(owner.person.team)
    made = client.post("/api/v1/jobs", json={**BODY, "count": 4}, headers=owner.headers)
    jobs = made.json()["jobs"]
    batch_id = jobs[0]["batch_id"]
    # One job is already at BFL: batch cancel leaves it to finish.
    committed_db.execute(
        update(Job).where(Job.id == jobs[0]["id"]).values(status=JobStatus.PENDING)
    )
    committed_db.commit()
    assert_error(
        client.post(f"/api/v1/batches/{batch_id}/cancel", headers=teammate.headers),
        403,
        "forbidden",
    )
    cancelled = client.post(f"/api/v1/batches/{batch_id}/cancel", headers=owner.headers)
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["unchanged"] == [jobs[0]["id"]]
    statuses = [j["status"] for j in cancelled.json()["jobs"]]
    assert statuses == ["pending", "cancelled", "cancelled", "cancelled"]
    assert_error(
        client.post(f"/api/v1/batches/{batch_id}/cancel", headers=owner.headers),
        409,
        "not_cancellable",
    )
    retried = client.post(f"/api/v1/batches/{batch_id}/retry", headers=owner.headers)
    assert retried.status_code == 201, retried.text
    new = retried.json()["jobs"]
    assert len(new) == 3 and len({j["batch_id"] for j in new}) == 1
    assert {j["retry_of_id"] for j in new} == {j["id"] for j in jobs[1:]}
    got = client.get(f"/api/v1/batches/{new[0]['batch_id']}", headers=owner.headers)
    assert got.status_code == 200 and [j["batch_index"] for j in got.json()["jobs"]] == [0, 1, 2]
    messages.discard_pending(committed_db)
    # Nothing was audited: a member acting on their own batch is not a manager action.
    assert (
        committed_db.scalars(
            select(AuditEntry).where(AuditEntry.team_id == owner.person.team.id)
        ).all()
        == []
    )
