"""Jobs over the API: create (JSON, base64, multipart), get, list, filters, pages, cancel, retry."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlalchemy.orm import Session

from app.auth.models import Role
from app.jobs.models import Favourite, Job, JobStatus
from app.settings import get_settings
from tests.api.conftest import MakeCaller, assert_error, make_job, picture

BODY = {"model": "flux-2-pro", "prompt": "a glass teapot", "params": {"width": 768}}


def test_create_one_and_a_batch(client: TestClient, make_caller: MakeCaller) -> None:
    caller = make_caller()
    one = client.post("/api/v1/jobs", json=BODY, headers=caller.headers)
    assert one.status_code == 201, one.text
    [job] = one.json()["jobs"]
    assert job["status"] == "queued" and job["model"] == "flux-2-pro"
    assert job["prompt"] == "a glass teapot" and job["width"] == 768
    assert job["user_id"] == str(caller.person.user.id) and job["image"] is None

    batch = client.post("/api/v1/jobs", json={**BODY, "count": 3}, headers=caller.headers)
    assert batch.status_code == 201
    jobs = batch.json()["jobs"]
    assert len(jobs) == 3 and len({j["batch_id"] for j in jobs}) == 1
    assert sorted(j["batch_index"] for j in jobs) == [0, 1, 2]

    fetched = client.get(f"/api/v1/jobs/{job['id']}", headers=caller.headers)
    assert fetched.status_code == 200 and fetched.json() == job


def test_reference_images_as_base64_and_as_files(
    client: TestClient, make_caller: MakeCaller
) -> None:
    caller = make_caller()
    encoded = base64.b64encode(picture()).decode()
    as_json = client.post(
        "/api/v1/jobs",
        json={**BODY, "reference_images": [encoded, f"data:image/png;base64,{encoded}"]},
        headers=caller.headers,
    )
    assert as_json.status_code == 201, as_json.text
    assert as_json.json()["jobs"][0]["reference_count"] == 2

    as_form = client.post(
        "/api/v1/jobs",
        data={
            "model": "flux-2-pro",
            "prompt": "a teapot",
            "params": '{"width": 512}',
            "count": "2",
        },
        files=[("reference_images", ("ref.jpg", picture("JPEG"), "image/jpeg"))],
        headers=caller.headers,
    )
    assert as_form.status_code == 201, as_form.text
    jobs = as_form.json()["jobs"]
    assert len(jobs) == 2 and jobs[0]["reference_count"] == 1 and jobs[0]["width"] == 512

    broken = client.post(
        "/api/v1/jobs", json={**BODY, "reference_images": ["not base64!"]}, headers=caller.headers
    )
    error = assert_error(broken, 422, "invalid_request")
    assert error["fields"][0]["field"] == "reference_images.0"  # type: ignore[index]


def test_validation_errors_name_the_field(client: TestClient, make_caller: MakeCaller) -> None:
    caller = make_caller()

    def fields_of(body: object) -> list[str]:
        response = client.post("/api/v1/jobs", json=body, headers=caller.headers)
        error = assert_error(response, 422, "invalid_request")
        return [f["field"] for f in error["fields"]]  # type: ignore[union-attr]

    assert fields_of({**BODY, "params": {"width": 500}}) == ["params.width"]
    assert fields_of({**BODY, "model": "flux-9"}) == ["model"]
    assert fields_of({**BODY, "count": 0}) == ["count"]
    assert fields_of({**BODY, "count": get_settings().MAX_BATCH_SIZE + 1}) == ["count"]
    assert fields_of({"prompt": "x"}) == ["model"]
    assert fields_of({**BODY, "params": {"steps": "many"}}) == ["params.steps"]
    assert fields_of({**BODY, "prompt": "nul \x00 here"}) == ["prompt"]
    assert fields_of({**BODY, "params": {"seed": "9" * 5000}}) == ["params"]
    assert fields_of({**BODY, "params": {"width": 10**400}}) == ["params"]
    assert fields_of([1, 2]) == ["body"]
    not_json = client.post(
        "/api/v1/jobs",
        content=b"{nope",
        headers={**caller.headers, "Content-Type": "application/json"},
    )
    assert_error(not_json, 422, "invalid_request")
    as_text = client.post(
        "/api/v1/jobs", content=b"hi", headers={**caller.headers, "Content-Type": "text/plain"}
    )
    assert_error(as_text, 415, "unsupported_media_type")


def test_budget_refusal_is_402(
    client: TestClient, make_caller: MakeCaller, committed_db: Session
) -> None:
    from app.costs.models import Budget

    caller = make_caller()
    committed_db.add(Budget(team_id=caller.team.id, user_id=None, monthly_credits=1))
    committed_db.commit()
    response = client.post("/api/v1/jobs", json=BODY, headers=caller.headers)
    error = assert_error(response, 402, "budget_exceeded")
    assert "budget" in str(error["message"])


def test_list_filters(client: TestClient, make_caller: MakeCaller, committed_db: Session) -> None:
    alice = make_caller()
    bob = make_caller(team=alice.team)
    fox = make_job(committed_db, alice, prompt="a red fox in snow", model="flux-2-flex")
    owl = make_job(committed_db, bob, prompt="an owl at night", status=JobStatus.FAILED)
    old = make_job(committed_db, bob, prompt="an old map")
    committed_db.execute(
        update(Job)
        .where(Job.id == old.id)
        .values(created_at=datetime.now(UTC) - timedelta(days=40))
    )
    committed_db.add(Favourite(user_id=alice.person.user.id, job_id=owl.id))
    committed_db.commit()

    def ids(**query: object) -> list[str]:
        response = client.get("/api/v1/jobs", params=query, headers=alice.headers)
        assert response.status_code == 200, response.text
        return [j["id"] for j in response.json()["items"]]

    assert ids() == [str(owl.id), str(fox.id), str(old.id)]
    assert ids(model="flux-2-flex") == [str(fox.id)]
    assert ids(user=str(bob.person.user.id)) == [str(owl.id), str(old.id)]
    assert ids(status="failed") == [str(owl.id)]
    assert ids(q="fox") == [str(fox.id)]
    assert ids(favourites="true") == [str(owl.id)]
    since = (datetime.now(UTC) - timedelta(days=2)).date().isoformat()
    assert ids(date_from=since) == [str(owl.id), str(fox.id)]
    until = (datetime.now(UTC) - timedelta(days=30)).date().isoformat()
    assert ids(date_to=until) == [str(old.id)]
    error = assert_error(
        client.get("/api/v1/jobs", params={"status": "done"}, headers=alice.headers),
        422,
        "invalid_request",
    )
    assert error["fields"][0]["field"] == "status"  # type: ignore[index]
    error = assert_error(
        client.get(
            "/api/v1/jobs",
            params={"date_from": "2025-02-01", "date_to": "2025-01-01"},
            headers=alice.headers,
        ),
        422,
        "invalid_request",
    )
    assert error["fields"][0]["field"] == "date_to"  # type: ignore[index]


def test_pages_neither_repeat_nor_skip_while_jobs_arrive(
    client: TestClient, make_caller: MakeCaller, committed_db: Session
) -> None:
    caller = make_caller()
    # Same created_at for all: only the id breaks ties, so the cursor must carry it.
    moment = datetime.now(UTC) - timedelta(hours=1)
    original = [make_job(committed_db, caller, prompt=f"tile {i}") for i in range(25)]
    committed_db.execute(
        update(Job).where(Job.id.in_([j.id for j in original])).values(created_at=moment)
    )
    committed_db.commit()

    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        query: dict[str, object] = {"limit": 10}
        if cursor:
            query["cursor"] = cursor
        page = client.get("/api/v1/jobs", params=query, headers=caller.headers).json()
        seen += [j["id"] for j in page["items"]]
        pages += 1
        # New work arriving between pages lands before the cursor and never shifts the walk.
        make_job(committed_db, caller, prompt=f"new {pages}")
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert len(seen) == len(set(seen)) == 25
    assert set(seen) == {str(j.id) for j in original}

    for damaged in ("zzz", "99999999999999999999.0123456789abcdef0123456789abcdef"):
        error = assert_error(
            client.get("/api/v1/jobs", params={"cursor": damaged}, headers=caller.headers),
            422,
            "invalid_request",
        )
        assert error["fields"][0]["field"] == "cursor"  # type: ignore[index]


def test_cancel_rules(client: TestClient, make_caller: MakeCaller, committed_db: Session) -> None:
    owner = make_caller()
    teammate = make_caller(team=owner.team)
    manager = make_caller(team=owner.team, role=Role.MANAGER)
    first = make_job(committed_db, owner)
    second = make_job(committed_db, owner)
    running = make_job(committed_db, owner, status=JobStatus.PENDING)

    assert_error(
        client.post(f"/api/v1/jobs/{first.id}/cancel", headers=teammate.headers), 403, "forbidden"
    )
    mine = client.post(f"/api/v1/jobs/{first.id}/cancel", headers=owner.headers)
    assert mine.status_code == 200 and mine.json()["status"] == "cancelled"
    by_manager = client.post(f"/api/v1/jobs/{second.id}/cancel", headers=manager.headers)
    assert by_manager.status_code == 200 and by_manager.json()["status"] == "cancelled"
    assert_error(
        client.post(f"/api/v1/jobs/{first.id}/cancel", headers=owner.headers),
        409,
        "not_cancellable",
    )
    assert_error(
        client.post(f"/api/v1/jobs/{running.id}/cancel", headers=owner.headers),
        409,
        "not_cancellable",
    )


def test_retry_queues_a_new_job(
    client: TestClient, make_caller: MakeCaller, committed_db: Session
) -> None:
    caller = make_caller()
    failed = make_job(committed_db, caller, status=JobStatus.FAILED)
    queued = make_job(committed_db, caller)
    retried = client.post(f"/api/v1/jobs/{failed.id}/retry", headers=caller.headers)
    assert retried.status_code == 201, retried.text
    [job] = retried.json()["jobs"]
    assert job["retry_of_id"] == str(failed.id) and job["status"] == "queued"
    assert job["id"] != str(failed.id)
    assert_error(
        client.post(f"/api/v1/jobs/{queued.id}/retry", headers=caller.headers),
        409,
        "not_retryable",
    )


def test_model_catalogue(client: TestClient, make_caller: MakeCaller) -> None:
    caller = make_caller()
    response = client.get("/api/v1/models", headers=caller.headers)
    assert response.status_code == 200
    body = response.json()
    names = [m["name"] for m in body["models"]]
    assert "flux-2-pro" in names
    pro = body["models"][names.index("flux-2-pro")]
    assert pro["pricing"]["first_megapixel_usd"] == "0.03"
    assert {"width", "height", "prompt"} <= {f["name"] for f in pro["fields"]}
    assert body["limits"]["max_pixels"] > 0


def test_api_says_when_images_come_from_the_emulator(
    client: TestClient, make_caller: MakeCaller
) -> None:
    caller = make_caller()
    catalogue = client.get("/api/v1/models", headers=caller.headers)
    me = client.get("/api/v1/me", headers=caller.headers)
    assert catalogue.status_code == 200 and me.status_code == 200
    assert catalogue.json()["bfl_backend"] == "emulator"
    assert me.json()["bfl_backend"] == "emulator"
