"""The gallery service: keyset pages, filters, search, favourites, delete and team walls."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy.orm import Session

from app.auth.models import Role
from app.errors import Forbidden
from app.gallery import service
from app.jobs import queries
from app.jobs import service as jobs_service
from app.jobs.errors import JobNotFound
from app.jobs.models import JobStatus
from tests.factories import Person, make_person
from tests.gallery.rows import add_image, add_job

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def test_pages_walk_newest_first_without_gaps_or_repeats(db: Session) -> None:
    alice = make_person(db)
    # Two jobs share a timestamp so the id breaks the tie.
    made = [
        add_job(db, alice, f"tile {i}", created_at=T0 + timedelta(minutes=i // 2))
        for i in range(11)
    ]
    seen: list[str] = []
    after = None
    pages = 0
    while True:
        page = service.list_gallery(
            db, team_id=alice.team.id, viewer_id=alice.user.id, after=after, limit=4
        )
        seen.extend(str(t.job_id) for t in page.tiles)
        pages += 1
        if page.next_cursor is None:
            break
        after = page.next_cursor
    expected = sorted(made, key=lambda j: (j.created_at, j.id), reverse=True)
    assert seen == [str(j.id) for j in expected]
    assert pages == 3


def test_other_teams_and_deleted_jobs_stay_out(db: Session) -> None:
    alice = make_person(db)
    mallory = make_person(db)
    mine = add_job(db, alice, "ours")
    gone = add_job(db, alice, "deleted one")
    add_job(db, mallory, "theirs")
    jobs_service.delete_job(
        db, team_id=alice.team.id, job_id=gone.id, user_id=alice.user.id, is_manager=False
    )
    page = service.list_gallery(db, team_id=alice.team.id, viewer_id=alice.user.id)
    assert [t.job_id for t in page.tiles] == [mine.id]
    with pytest.raises(JobNotFound):
        queries.get_detail(db, team_id=mallory.team.id, job_id=mine.id, viewer_id=mallory.user.id)
    with pytest.raises(JobNotFound):
        queries.get_detail(db, team_id=alice.team.id, job_id=gone.id, viewer_id=alice.user.id)


def test_filters_combine(db: Session) -> None:
    alice = make_person(db)
    bob = make_person(db, team=alice.team)
    a1 = add_job(db, alice, "red fox in snow", model="flux-2-flex", created_at=T0)
    whale = add_job(db, alice, "blue whale", model="flux-2-pro", created_at=T0 + timedelta(days=1))
    b1 = add_job(
        db,
        bob,
        "red panda",
        model="flux-2-flex",
        created_at=T0 + timedelta(days=2),
        status=JobStatus.MODERATED,
    )

    def ids(**kw: object) -> set[object]:
        filters = service.parse_filters(**kw)  # type: ignore[arg-type]
        return {
            t.job_id
            for t in service.list_gallery(
                db, team_id=alice.team.id, viewer_id=alice.user.id, filters=filters
            ).tiles
        }

    assert ids(model="flux-2-flex") == {a1.id, b1.id}
    assert ids(user=str(bob.user.id)) == {b1.id}
    assert ids(status="moderated") == {b1.id}
    assert ids(q="red") == {a1.id, b1.id}
    assert ids(q="red -panda") == {a1.id}
    assert ids(q='"red fox"') == {a1.id}
    assert ids(date_from="2025-03-02", date_to="2025-03-02") == {whale.id}
    assert ids(date_to=date(2025, 3, 1).isoformat()) == {a1.id}
    jobs_service.set_favourite(
        db, team_id=alice.team.id, user_id=alice.user.id, job_id=b1.id, on=True
    )
    assert ids(favourites="1") == {b1.id}
    assert ids(favourites="1", q="fox") == set()


def test_bad_filters_name_the_field(db: Session) -> None:
    with pytest.raises(service.GalleryInputError) as caught:
        service.parse_filters(date_from="yesterday")
    assert caught.value.field == "from"
    with pytest.raises(service.GalleryInputError) as caught:
        service.parse_filters(date_from="2025-02-02", date_to="2025-01-01")
    assert caught.value.field == "to"
    with pytest.raises(service.GalleryInputError):
        service.parse_filters(status="done")
    with pytest.raises(service.GalleryInputError):
        service.Cursor.decode("not-a-cursor")


def test_favourite_toggle_is_per_person(db: Session) -> None:
    alice = make_person(db)
    bob = make_person(db, team=alice.team)
    job = add_job(db, alice)
    assert (
        jobs_service.toggle_favourite(
            db, team_id=alice.team.id, user_id=alice.user.id, job_id=job.id
        )
        is True
    )
    assert queries.get_detail(
        db, team_id=alice.team.id, job_id=job.id, viewer_id=alice.user.id
    ).favourite
    assert not queries.get_detail(
        db, team_id=alice.team.id, job_id=job.id, viewer_id=bob.user.id
    ).favourite
    assert (
        queries.get_detail(
            db, team_id=alice.team.id, job_id=job.id, viewer_id=bob.user.id
        ).favourite_count
        == 1
    )
    assert (
        jobs_service.toggle_favourite(
            db, team_id=alice.team.id, user_id=alice.user.id, job_id=job.id
        )
        is False
    )
    tile = service.list_gallery(db, team_id=alice.team.id, viewer_id=alice.user.id).tiles[0]
    assert tile.favourite is False


def test_delete_needs_author_or_manager(db: Session) -> None:
    alice = make_person(db)
    bob = make_person(db, team=alice.team)
    boss = make_person(db, team=alice.team, role=Role.MANAGER)
    job = add_job(db, alice)
    with pytest.raises(Forbidden):
        jobs_service.delete_job(
            db, team_id=alice.team.id, job_id=job.id, user_id=bob.user.id, is_manager=False
        )
    jobs_service.delete_job(
        db, team_id=alice.team.id, job_id=job.id, user_id=boss.user.id, is_manager=True
    )
    with pytest.raises(JobNotFound):
        queries.team_job(db, team_id=alice.team.id, job_id=job.id)


def test_image_file_is_team_scoped_and_named(db: Session) -> None:
    alice = make_person(db)
    mallory = make_person(db)
    job = add_job(db, alice)
    add_image(db, job)
    original = queries.image_file(db, team_id=alice.team.id, job_id=job.id, variant="original")
    assert original.content_type == "image/jpeg"
    assert original.filename.endswith(".jpg") and original.filename.startswith("flux-2-pro-")
    assert (
        queries.image_file(db, team_id=alice.team.id, job_id=job.id, variant="thumb").content_type
        == "image/webp"
    )
    with pytest.raises(JobNotFound):
        queries.image_file(db, team_id=mallory.team.id, job_id=job.id, variant="original")


def _search_all(db: Session, person: Person, walk_rows: int, **filters: str) -> list[object]:
    """Every tile id of a search, three to a page, with the given walk size."""
    seen: list[object] = []
    after = None
    parsed = service.parse_filters(**filters)
    while True:
        page = service.list_gallery(
            db,
            team_id=person.team.id,
            viewer_id=person.user.id,
            filters=parsed,
            after=after,
            limit=3,
            search_walk_rows=walk_rows,
        )
        seen.extend(t.job_id for t in page.tiles)
        if page.next_cursor is None:
            return seen
        after = page.next_cursor


def test_search_finds_the_same_pages_by_walk_or_by_index(db: Session) -> None:
    # The newest jobs mostly miss the words, so a short walk leaves the page to the GIN index
    # and a long walk fills it alone; both must give the same tiles in the same order.
    alice = make_person(db)
    bob = make_person(db, team=alice.team)
    mallory = make_person(db)
    words = ["red fox", "blue whale", "red panda", "green owl"]
    for i in range(40):
        who = bob if i % 3 == 0 else alice
        model = "flux-2-flex" if i % 2 else "flux-2-pro"
        add_job(db, who, f"{words[i % 4]} number {i}", model=model, created_at=T0 + timedelta(i))
        add_job(db, mallory, f"red fox {i}", created_at=T0 + timedelta(i, seconds=1))
    favourite = add_job(db, alice, "red fox, by the sea", created_at=T0 - timedelta(days=1))
    jobs_service.set_favourite(
        db, team_id=alice.team.id, user_id=alice.user.id, job_id=favourite.id, on=True
    )

    searches: list[dict[str, str]] = [
        {"q": "red"},
        {"q": "fox"},
        {"q": '"red fox"'},
        {"q": "red -panda"},
        {"q": "owl", "model": "flux-2-flex"},
        {"q": "red", "user": str(bob.user.id)},
        {"q": "fox", "favourites": "1"},
        {"q": '"number 7"'},
        {"q": "missing"},
    ]
    for filters in searches:
        by_index = _search_all(db, alice, walk_rows=2, **filters)
        by_walk = _search_all(db, alice, walk_rows=10_000, **filters)
        assert by_index == by_walk, filters
    reds = _search_all(db, alice, walk_rows=2, q="red")
    assert len(reds) == 21  # 20 of the 40 jobs, and the favourite; none of mallory's
    assert _search_all(db, alice, walk_rows=2, q="fox", favourites="1") == [favourite.id]
    assert _search_all(db, alice, walk_rows=2, q='"number 7"') != []


def test_quoted_phrase_matches_across_punctuation_but_not_apart(db: Session) -> None:
    alice = make_person(db)
    comma = add_job(db, alice, "a red, fox at dawn", created_at=T0)
    dash = add_job(db, alice, "red-fox mascot", created_at=T0 + timedelta(1))
    apart = add_job(db, alice, "red barn and a fox", created_at=T0 + timedelta(2))

    def ids(q: str, walk_rows: int) -> set[object]:
        return set(_search_all(db, alice, walk_rows=walk_rows, q=q))

    for walk_rows in (1, 100):
        assert ids('"red fox"', walk_rows) == {comma.id, dash.id}
        assert ids("red fox", walk_rows) == {comma.id, dash.id, apart.id}
