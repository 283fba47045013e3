"""Bulk actions: "all matching" is resolved on the server with the filter; rights as one by one."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.boards.models import BoardItem
from app.db import utcnow
from app.jobs.models import Favourite, Job
from tests.api.conftest import MakeCaller, assert_error
from tests.gallery.rows import add_image, add_job
from tests.signed_in import SignIn


def test_all_matching_the_filter_covers_every_page_not_only_loaded_tiles(
    committed_db: Session, client: TestClient, make_caller: MakeCaller
) -> None:
    alice = make_caller()
    # More than two gallery pages (36 tiles each) match; a few others do not.
    foxes = [
        add_job(
            committed_db,
            alice.person,
            f"a fox number {i}",
            created_at=utcnow() - timedelta(seconds=i),
        )
        for i in range(80)
    ]
    owls = [add_job(committed_db, alice.person, f"an owl {i}") for i in range(5)]
    committed_db.commit()
    board = client.post("/api/v1/boards", json={"name": "Foxes"}, headers=alice.headers).json()

    answer = client.post(
        "/api/v1/images/bulk",
        json={"action": "board", "board_id": board["id"], "filters": {"q": "fox"}},
        headers=alice.headers,
    )
    assert answer.json() == {"changed": 80, "refused": []}
    on_board = set(committed_db.scalars(select(BoardItem.job_id)))
    assert on_board == {j.id for j in foxes}

    # The board filter and a search combine, as they do in the grid.
    fav = client.post(
        "/api/v1/images/bulk",
        json={"action": "favourite", "filters": {"board": board["id"], "q": "number 7"}},
        headers=alice.headers,
    ).json()
    assert fav["changed"] >= 1
    marked = set(committed_db.scalars(select(Favourite.job_id)))
    assert marked and marked <= {j.id for j in foxes} and not marked & {o.id for o in owls}

    bad = client.post(
        "/api/v1/images/bulk",
        json={"action": "favourite", "filters": {"date_from": "yesterday"}},
        headers=alice.headers,
    )
    assert_error(bad, 422, "invalid_request")
    assert bad.json()["error"]["fields"][0]["field"] == "filters.from"
    nothing = client.post("/api/v1/images/bulk", json={"action": "delete"}, headers=alice.headers)
    assert "select at least one image" in nothing.text


def test_bulk_delete_refuses_a_members_teammates_images_one_by_one(
    committed_db: Session, sign_in: SignIn, make_caller: MakeCaller
) -> None:
    alice = make_caller()
    bob = make_caller(team=alice.team)
    mine = [add_job(committed_db, alice.person, f"mine {i}") for i in range(3)]
    theirs = [add_job(committed_db, bob.person, f"theirs {i}") for i in range(2)]
    for job in mine + theirs:
        add_image(committed_db, job)
    committed_db.commit()
    client = sign_in(alice.person)
    ids = ",".join(str(j.id) for j in mine + theirs)

    answer = client.post(
        "/gallery/bulk", data={"action": "delete", "job_ids": ids}, headers={"hx-request": "true"}
    )
    assert answer.status_code == 200
    assert "Deleted: 3." in answer.text
    assert "Not changed: 2" in answer.text and "Only the person who made this image" in answer.text
    for job in mine:
        assert f'id="tile-{job.id}" hx-swap-oob="delete"' in answer.text
    for job in theirs:
        assert f"tile-{job.id}" not in answer.text
    committed_db.expire_all()
    deleted = {j.id for j in committed_db.scalars(select(Job).where(Job.deleted_at.is_not(None)))}
    assert deleted == {j.id for j in mine}


def test_another_teams_ids_in_a_selection_are_refused_not_touched(
    committed_db: Session, client: TestClient, make_caller: MakeCaller
) -> None:
    alice, eve = make_caller(), make_caller()
    hers = add_job(committed_db, alice.person, "alice's image")
    committed_db.commit()
    answer = client.post(
        "/api/v1/images/bulk",
        json={"action": "favourite", "job_ids": [str(hers.id)]},
        headers=eve.headers,
    ).json()
    assert answer == {
        "changed": 0,
        "refused": [{"job_id": str(hers.id), "reason": "not found in this team"}],
    }
    assert committed_db.scalar(select(Favourite.job_id)) is None
