"""Boards through both doors: create, rename, cover, delete, images on several boards, rights."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.audit.models import AuditEntry
from app.auth.models import Role
from app.boards.models import Board, BoardItem
from app.db import utcnow
from app.jobs.models import Job
from tests.api.conftest import MakeCaller, assert_error
from tests.factories import make_person
from tests.gallery.rows import add_image, add_job
from tests.signed_in import SignIn


def _ready(db: Session, person, prompt: str, minutes_ago: int = 0) -> Job:  # type: ignore[no-untyped-def]
    job = add_job(db, person, prompt, created_at=utcnow() - timedelta(minutes=minutes_ago))
    add_image(db, job)
    return job


def test_boards_through_the_api_share_images_and_deleting_one_keeps_them(
    committed_db: Session, client: TestClient, make_caller: MakeCaller
) -> None:
    alice = make_caller()
    bob = make_caller(team=alice.team)
    fox = _ready(committed_db, alice.person, "a red fox", 3)
    owl = _ready(committed_db, alice.person, "a snowy owl", 2)
    committed_db.commit()

    made = client.post("/api/v1/boards", json={"name": "Winter"}, headers=alice.headers)
    assert made.status_code == 201, made.text
    winter = made.json()
    assert winter["image_count"] == 0 and winter["cover_job_id"] is None
    other = client.post("/api/v1/boards", json={"name": "Animals"}, headers=bob.headers).json()
    taken = client.post("/api/v1/boards", json={"name": "  winter "}, headers=bob.headers)
    assert_error(taken, 422, "invalid_request")
    assert (
        "already has a board called" in taken.text
        and taken.json()["error"]["fields"][0]["field"] == "name"
    )

    # Anyone in the team adds images; one image on two boards.
    added = client.post(
        f"/api/v1/boards/{winter['id']}/images",
        json={"job_ids": [str(fox.id), str(owl.id), str(fox.id)]},
        headers=bob.headers,
    ).json()
    assert added == {"changed": 2, "refused": []}
    client.post(
        f"/api/v1/boards/{other['id']}/images", json={"job_ids": [str(fox.id)]}, headers=bob.headers
    )
    again = client.get(f"/api/v1/boards/{winter['id']}", headers=alice.headers).json()
    assert again["image_count"] == 2
    assert again["cover_job_id"] == str(fox.id) and again["cover_chosen"] is False  # first added

    # The board's images are the gallery's listing with a board filter.
    listed = client.get(again["images_url"], headers=alice.headers).json()
    assert [j["id"] for j in listed["items"]] == [str(owl.id), str(fox.id)]
    searched = client.get(again["images_url"] + "&q=owl", headers=alice.headers).json()
    assert [j["id"] for j in searched["items"]] == [str(owl.id)]

    cover = client.patch(
        f"/api/v1/boards/{winter['id']}", json={"cover_job_id": str(owl.id)}, headers=alice.headers
    ).json()
    assert cover["cover_job_id"] == str(owl.id) and cover["cover_chosen"] is True
    not_on = client.patch(
        f"/api/v1/boards/{other['id']}", json={"cover_job_id": str(owl.id)}, headers=bob.headers
    )
    assert_error(not_on, 422, "invalid_request")

    removed = client.delete(f"/api/v1/boards/{winter['id']}/images/{fox.id}", headers=bob.headers)
    assert removed.json() == {"changed": 1, "refused": []}
    deleted = client.delete(f"/api/v1/boards/{winter['id']}", headers=alice.headers)
    assert deleted.status_code == 200 and deleted.json()["name"] == "Winter"
    committed_db.expire_all()
    assert (
        committed_db.scalar(select(func.count()).select_from(Job).where(Job.deleted_at.is_(None)))
        == 2
    )
    assert committed_db.scalar(select(func.count()).select_from(BoardItem)) == 1  # fox on Animals
    assert client.get(f"/api/v1/boards/{winter['id']}", headers=alice.headers).status_code == 404


def test_only_the_creator_and_managers_rename_or_delete_and_managers_are_audited(
    committed_db: Session, client: TestClient, make_caller: MakeCaller
) -> None:
    maker = make_caller()
    member = make_caller(team=maker.team)
    manager = make_caller(team=maker.team, role=Role.MANAGER)
    board = client.post("/api/v1/boards", json={"name": "Moodboard"}, headers=maker.headers).json()
    url = f"/api/v1/boards/{board['id']}"

    refused = client.patch(url, json={"name": "Mine now"}, headers=member.headers)
    assert_error(refused, 403, "forbidden")
    assert_error(client.delete(url, headers=member.headers), 403, "forbidden")

    own = client.patch(url, json={"name": "Moodboard 2"}, headers=maker.headers)
    assert own.json()["name"] == "Moodboard 2"
    assert committed_db.scalar(select(func.count()).select_from(AuditEntry)) == 0

    renamed = client.patch(url, json={"name": "Campaign"}, headers=manager.headers)
    assert renamed.status_code == 200 and renamed.json()["name"] == "Campaign"
    assert client.delete(url, headers=manager.headers).status_code == 200
    entries = committed_db.execute(
        select(
            AuditEntry.action, AuditEntry.actor_id, AuditEntry.before, AuditEntry.after
        ).order_by(AuditEntry.at)
    ).all()
    assert [(e.action, e.actor_id) for e in entries] == [
        ("board.rename", manager.person.user.id),
        ("board.delete", manager.person.user.id),
    ]
    assert entries[0].before == {"name": "Moodboard 2"} and entries[0].after == {"name": "Campaign"}


def test_board_pages_reuse_the_gallery_grid_and_the_gallery_filters_by_board(
    committed_db: Session, sign_in: SignIn
) -> None:
    carol = make_person(committed_db)
    kept = _ready(committed_db, carol, "a teal lighthouse", 2)
    other = _ready(committed_db, carol, "a teal harbour", 1)
    committed_db.commit()
    client = sign_in(carol)

    empty = client.post("/boards", data={"name": " "})
    assert empty.status_code == 422 and "give the board a name" in empty.text
    made = client.post("/boards", data={"name": "Coast"})
    assert made.status_code == 303
    board_url = made.headers["location"]
    board_id = board_url.rsplit("/", 1)[1]
    result = client.post(
        "/gallery/bulk",
        data={"action": "board", "board_id": board_id, "job_ids": str(kept.id)},
        headers={"hx-request": "true"},
    )
    assert "Added to the board: 1." in result.text

    page = client.get(board_url)
    assert page.status_code == 200
    assert "Coast" in page.text and f"tile-{kept.id}" in page.text
    assert f"tile-{other.id}" not in page.text
    assert 'id="bulk-form"' in page.text and "Remove from this board" in page.text
    # The board's own search is the gallery's search.
    assert f"tile-{kept.id}" not in client.get(board_url + "?q=harbour").text
    # The gallery's board filter shows the same.
    gallery = client.get(f"/gallery?board={board_id}")
    assert f"tile-{kept.id}" in gallery.text and f"tile-{other.id}" not in gallery.text
    assert "choose a board from the list" in client.get("/gallery?board=nope").text

    # The cover: the one tile picked in the bulk bar; two picked is one too many.
    hx = {"hx-request": "true"}
    two = client.post(
        f"/boards/{board_id}/cover", data={"job_ids": f"{kept.id},{other.id}"}, headers=hx
    )
    assert "pick one image to be the cover" in two.text
    client.post(
        "/gallery/bulk",
        data={"action": "board", "board_id": board_id, "job_ids": str(other.id)},
        headers=hx,
    )
    chosen = client.post(f"/boards/{board_id}/cover", data={"job_ids": str(other.id)}, headers=hx)
    assert "Cover chosen." in chosen.text
    assert f"/images/{other.id}/thumb" in client.get("/boards").text
    client.post(f"/boards/{board_id}/cover", data={"job_id": ""})  # back to the first added
    client.post(
        "/gallery/bulk",
        data={"action": "unboard", "board_id": board_id, "job_ids": str(other.id)},
        headers=hx,
    )

    listing = client.get("/boards")
    assert "Coast" in listing.text and f"/images/{kept.id}/thumb" in listing.text  # cover
    client.post(f"/boards/{board_id}/rename", data={"name": "Shore"})
    assert "Shore" in client.get(board_url).text
    gone = client.post(f"/boards/{board_id}/delete")
    assert gone.status_code == 303 and gone.headers["location"] == "/boards"
    committed_db.expire_all()
    assert committed_db.scalar(select(func.count()).select_from(Board)) == 0
    assert client.get(f"/gallery/{kept.id}").status_code == 200
