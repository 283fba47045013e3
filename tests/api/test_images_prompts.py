"""Images (metadata, original, thumbnail) and the shared prompt history over the API."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app.recipes.service import with_recipe
from tests.api.conftest import MakeCaller, assert_error, make_job, make_ready_job


def test_image_metadata_and_files(
    client: TestClient, make_caller: MakeCaller, committed_db: Session
) -> None:
    caller = make_caller()
    job, original = make_ready_job(committed_db, caller)
    meta = client.get(f"/api/v1/images/{job.id}", headers=caller.headers)
    assert meta.status_code == 200, meta.text
    body = meta.json()
    assert body["content_type"] == "image/png" and body["size_bytes"] == len(original)
    assert body["original_url"] == f"/api/v1/images/{job.id}/original"

    full = client.get(body["original_url"], headers=caller.headers)
    # The stored original with its recipe inserted (tests/recipes): same pixels, more bytes.
    assert full.status_code == 200 and full.content == with_recipe(original, job)
    assert full.headers["content-type"] == "image/png"
    thumb = client.get(body["thumbnail_url"], headers=caller.headers)
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/webp"
    assert thumb.content[:4] == b"RIFF"

    listed = client.get(f"/api/v1/jobs/{job.id}", headers=caller.headers).json()
    assert listed["image"] == body

    queued = make_job(committed_db, caller)
    for path in ("", "/original", "/thumbnail"):
        assert_error(
            client.get(f"/api/v1/images/{queued.id}{path}", headers=caller.headers),
            404,
            "not_found",
        )


def test_prompt_history_and_reuse(
    client: TestClient, make_caller: MakeCaller, committed_db: Session
) -> None:
    alice = make_caller()
    bob = make_caller(team=alice.team)
    make_job(committed_db, alice, prompt="a blue whale")
    make_job(committed_db, bob, prompt="a blue whale")
    last = make_job(committed_db, bob, prompt="a green turtle")

    listed = client.get("/api/v1/prompts", headers=alice.headers)
    assert listed.status_code == 200, listed.text
    items = listed.json()["items"]
    assert [(p["prompt"], p["uses"]) for p in items] == [("a green turtle", 1), ("a blue whale", 2)]
    assert items[0]["last_job_id"] == str(last.id)

    only_alice = client.get(
        "/api/v1/prompts", params={"user": str(alice.person.user.id)}, headers=alice.headers
    ).json()["items"]
    assert [p["prompt"] for p in only_alice] == ["a blue whale"]
    searched = client.get("/api/v1/prompts", params={"q": "turtle"}, headers=alice.headers)
    assert [p["prompt"] for p in searched.json()["items"]] == ["a green turtle"]

    paged = client.get("/api/v1/prompts", params={"limit": 1}, headers=alice.headers).json()
    assert paged["next_cursor"]
    rest = client.get(
        "/api/v1/prompts",
        params={"limit": 1, "cursor": paged["next_cursor"]},
        headers=alice.headers,
    ).json()
    assert [p["prompt"] for p in rest["items"]] == ["a blue whale"]
    assert_error(
        client.get("/api/v1/prompts", params={"cursor": "nope"}, headers=alice.headers),
        422,
        "invalid_request",
    )

    reuse = client.get(f"/api/v1/prompts/{last.id}", headers=alice.headers)
    assert reuse.status_code == 200
    body = reuse.json()
    assert body["prompt"] == "a green turtle" and body["model"] == "flux-2-pro"
    again = client.post("/api/v1/jobs", json=body, headers=alice.headers)
    assert again.status_code == 201, again.text
