"""The studio pages over real HTTP: generate form, job cards, gallery, detail and image files."""

from __future__ import annotations

import re
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.bfl.catalogue import estimate_cost
from app.costs.models import Budget
from app.jobs.models import Favourite, Job, JobStatus
from app.recipes.service import with_recipe
from app.storage import get_storage
from tests.factories import make_person
from tests.gallery.rows import add_image, add_job
from tests.signed_in import SignIn

HX = {"hx-request": "true"}


def _jobs(db: Session) -> list[Job]:
    db.expire_all()
    return list(db.scalars(select(Job).order_by(Job.created_at)))


def test_pages_need_sign_in(committed_db: Session, sign_in: SignIn) -> None:
    from fastapi.testclient import TestClient

    from app.main import app

    with TestClient(app, base_url="https://testserver", follow_redirects=False) as anonymous:
        for path in ("/", "/gallery", "/prompts"):
            response = anonymous.get(path)
            assert response.status_code == 303
            assert response.headers["location"].startswith("/login")


def test_generate_page_shows_models_and_catalogue_driven_fields(
    committed_db: Session, sign_in: SignIn
) -> None:
    alice = make_person(committed_db)
    page = sign_in(alice).get("/")
    assert page.status_code == 200
    html = page.text
    assert 'name="model" value="flux-2-flex"' in html and 'name="model" value="flux-2-pro"' in html
    assert "fast (under 10 s)" in html  # speed straight from the catalogue
    # steps and guidance exist for flex but start hidden for the default model (pro).
    assert re.search(r'data-field="steps"\s+hidden', html)
    assert 'id="catalogue-data"' in html and '"max_reference_images"' in html
    assert 'name="csrf_token"' in html


def test_field_errors_sit_next_to_the_field_and_keep_what_was_typed(
    committed_db: Session, sign_in: SignIn
) -> None:
    alice = make_person(committed_db)
    client = sign_in(alice)
    form = {
        "model": "flux-2-pro",
        "prompt": "a very particular teapot",
        "width": "1000",
        "height": "1024",
        "seed_mode": "random",
        "count": "1",
        "safety_tolerance": "2",
        "output_format": "jpeg",
    }
    response = client.post("/generate", data=form, headers=HX)
    assert response.status_code == 200
    assert 'id="err-width"' in response.text
    assert "multiple of 16; try 1008" in response.text
    assert "a very particular teapot" in response.text
    assert 'value="1000"' in response.text
    assert _jobs(committed_db) == []

    # Without htmx the same post answers a whole page with status 422.
    plain = client.post("/generate", data=form)
    assert plain.status_code == 422 and "<html" in plain.text and 'id="err-width"' in plain.text


def test_fixed_seed_without_a_number_is_explained(committed_db: Session, sign_in: SignIn) -> None:
    alice = make_person(committed_db)
    response = sign_in(alice).post(
        "/generate",
        data={"model": "flux-2-pro", "prompt": "x", "seed_mode": "fixed", "seed": "", "count": "1"},
        headers=HX,
    )
    assert 'id="err-seed"' in response.text and "choose Random" in response.text


def test_generate_queues_a_batch_and_shows_polling_cards(
    committed_db: Session, sign_in: SignIn
) -> None:
    alice = make_person(committed_db)
    client = sign_in(alice)
    response = client.post(
        "/generate",
        data={
            "model": "flux-2-flex",
            "prompt": "two owls",
            "width": "1024",
            "height": "1024",
            "seed_mode": "fixed",
            "seed": "7",
            "steps": "20",
            "guidance": "3.5",
            "count": "2",
            "output_format": "png",
        },
        headers=HX,
    )
    assert response.status_code == 200, response.text
    jobs = _jobs(committed_db)
    assert len(jobs) == 2
    assert {j.params["steps"] for j in jobs} == {20}
    assert sorted(j.seed for j in jobs if j.seed is not None) == [7, 8]
    assert 'hx-swap-oob="afterbegin:#job-list"' in response.text
    # A batch is one group that refreshes itself (its cards inside do not poll one by one).
    assert f'hx-get="/batches/{jobs[0].batch_id}/group"' in response.text
    for job in jobs:
        assert f'id="job-{job.id}"' in response.text
        assert f'hx-get="/jobs/{job.id}/card"' not in response.text
    group = client.get(f"/batches/{jobs[0].batch_id}/group")
    assert group.status_code == 200 and all(f'id="job-{j.id}"' in group.text for j in jobs)

    card = client.get(f"/jobs/{jobs[0].id}/card")
    assert card.status_code == 200 and 'hx-trigger="every 1s"' in card.text


def test_steps_from_another_model_are_not_sent(committed_db: Session, sign_in: SignIn) -> None:
    alice = make_person(committed_db)
    client = sign_in(alice)
    # The form keeps flex's steps around while pro is chosen; pro does not take steps.
    response = client.post(
        "/generate",
        data={"model": "flux-2-pro", "prompt": "a boat", "steps": "20", "count": "1"},
        headers=HX,
    )
    assert response.status_code == 200
    (job,) = _jobs(committed_db)
    assert "steps" not in job.params


def test_budget_refusal_is_shown(committed_db: Session, sign_in: SignIn) -> None:
    alice = make_person(committed_db)
    committed_db.add(Budget(team_id=alice.team.id, user_id=None, monthly_credits=Decimal("1")))
    committed_db.commit()
    response = sign_in(alice).post(
        "/generate", data={"model": "flux-2-pro", "prompt": "a boat", "count": "1"}, headers=HX
    )
    assert 'role="alert"' in response.text
    assert "budget has 1.00 of 1.00 credits left this month" in response.text
    assert _jobs(committed_db) == []


def test_estimate_matches_the_catalogue(committed_db: Session, sign_in: SignIn) -> None:
    alice = make_person(committed_db)
    client = sign_in(alice)
    response = client.get(
        "/generate/estimate",
        params={
            "model": "flux-2-flex",
            "width": "1440",
            "height": "1440",
            "count": "3",
            "reference_count": "2",
        },
    )
    each = estimate_cost("flux-2-flex", 1440, 1440, 2)
    total = each.credits * 3
    shown = re.search(r"<strong>([\d.]+) credits</strong>", response.text)
    assert shown is not None
    assert Decimal(shown.group(1)) == total
    assert f"${each.usd * 3:.2f}" in response.text


def test_state_changes_need_the_csrf_token(committed_db: Session, sign_in: SignIn) -> None:
    alice = make_person(committed_db)
    job = add_job(committed_db, alice)
    committed_db.commit()
    client = sign_in(alice)
    refused = client.post(f"/gallery/{job.id}/favourite", headers={"x-csrf-token": ""})
    assert refused.status_code == 403
    assert committed_db.scalar(select(func.count()).select_from(Favourite)) == 0


def test_cancel_and_retry_from_the_card(committed_db: Session, sign_in: SignIn) -> None:
    alice = make_person(committed_db)
    queued = add_job(committed_db, alice, "wait for me", status=JobStatus.QUEUED, cost=None)
    failed = add_job(committed_db, alice, "try again", status=JobStatus.FAILED, cost=None)
    committed_db.commit()
    client = sign_in(alice)
    cancelled = client.post(f"/jobs/{queued.id}/cancel", headers=HX)
    assert cancelled.status_code == 200 and 'data-status="cancelled"' in cancelled.text
    retried = client.post(f"/jobs/{failed.id}/retry", headers=HX)
    assert retried.status_code == 200
    again = [j for j in _jobs(committed_db) if j.retry_of_id == failed.id]
    assert len(again) == 1 and again[0].status == "queued"
    assert f'id="job-{again[0].id}"' in retried.text


def test_gallery_search_detail_and_image_files(committed_db: Session, sign_in: SignIn) -> None:
    alice = make_person(committed_db)
    fox = add_job(committed_db, alice, "a red fox in deep snow")
    add_image(committed_db, fox)
    add_job(committed_db, alice, "a blue whale")
    committed_db.commit()
    client = sign_in(alice)

    found = client.get("/gallery", params={"q": "fox"})
    assert found.status_code == 200
    assert f"/gallery/{fox.id}" in found.text and "blue whale" not in found.text
    assert 'loading="lazy"' in found.text

    detail = client.get(f"/gallery/{fox.id}")
    assert detail.status_code == 200
    for expected in (
        "a red fox in deep snow",
        str(fox.seed),
        "3 credits",
        "4.0 s",
        alice.user.name,
    ):
        assert expected in detail.text
    assert f'href="/?from={fox.id}"' in detail.text

    original = client.get(f"/images/{fox.id}/original")
    assert original.status_code == 200
    assert original.headers["content-type"] == "image/jpeg"
    assert "private" in original.headers["cache-control"]
    # The stored file with its recipe inserted (tests/recipes): same pixels, more bytes.
    stored = get_storage().get(fox.image.storage_key)  # type: ignore[union-attr]
    assert original.content == with_recipe(stored, fox)
    download = client.get(f"/images/{fox.id}/original", params={"download": "1"})
    assert download.headers["content-disposition"].startswith('attachment; filename="flux-2-pro-')
    thumb = client.get(f"/images/{fox.id}/thumb")
    assert thumb.headers["content-type"] == "image/webp"
    cached = client.get(f"/images/{fox.id}/thumb", headers={"if-none-match": thumb.headers["etag"]})
    assert cached.status_code == 304

    reuse = client.get("/", params={"from": str(fox.id)})
    assert "a red fox in deep snow" in reuse.text
    assert f'value="{fox.seed}"' in reuse.text


def test_endless_scroll_continues_with_filters(committed_db: Session, sign_in: SignIn) -> None:
    alice = make_person(committed_db)
    for i in range(40):
        add_job(committed_db, alice, f"lantern number {i}", model="flux-2-flex")
    committed_db.commit()
    client = sign_in(alice)
    first = client.get("/gallery", params={"model": "flux-2-flex"})
    more = re.search(r'hx-get="(/gallery/more\?[^"]+)" hx-trigger="revealed"', first.text)
    assert more is not None
    url = more.group(1).replace("&amp;", "&")
    assert "model=flux-2-flex" in url
    second = client.get(url, headers=HX)
    assert second.status_code == 200
    assert second.text.count('class="tile ') == 40 - first.text.count('class="tile ')
    assert 'hx-trigger="revealed"' not in second.text


def test_favourite_vary_and_delete(committed_db: Session, sign_in: SignIn) -> None:
    alice = make_person(committed_db)
    bob = make_person(committed_db, team=alice.team)
    job = add_job(committed_db, alice, "a kite")
    committed_db.commit()
    alice_client, bob_client = sign_in(alice), sign_in(bob)

    on = alice_client.post(f"/gallery/{job.id}/favourite", headers=HX)
    assert 'aria-pressed="true"' in on.text
    favourites = alice_client.get("/gallery", params={"favourites": "1"})
    assert f"/gallery/{job.id}" in favourites.text
    assert f"/gallery/{job.id}" not in bob_client.get("/gallery?favourites=1").text

    varied = bob_client.post(f"/gallery/{job.id}/vary", headers=HX)
    assert varied.status_code == 200
    new = [j for j in _jobs(committed_db) if j.id != job.id]
    assert len(new) == 1 and new[0].prompt == "a kite" and new[0].user_id == bob.user.id

    assert bob_client.post(f"/gallery/{job.id}/delete").status_code == 403
    gone = alice_client.post(f"/gallery/{job.id}/delete")
    assert gone.status_code == 303
    assert alice_client.get(f"/gallery/{job.id}").status_code == 404


def test_another_team_gets_404_everywhere(committed_db: Session, sign_in: SignIn) -> None:
    alice = make_person(committed_db)
    mallory = make_person(committed_db)
    job = add_job(committed_db, alice, "team a secret")
    add_image(committed_db, job)
    queued = add_job(committed_db, alice, "queued secret", status=JobStatus.QUEUED)
    committed_db.commit()
    client = sign_in(mallory)
    for path in (
        f"/gallery/{job.id}",
        f"/images/{job.id}/original",
        f"/images/{job.id}/thumb",
        f"/jobs/{job.id}/card",
        f"/?from={job.id}",
    ):
        assert client.get(path).status_code == 404, path
    for path in (
        f"/gallery/{job.id}/favourite",
        f"/gallery/{job.id}/vary",
        f"/gallery/{job.id}/delete",
        f"/jobs/{queued.id}/cancel",
        f"/jobs/{job.id}/retry",
    ):
        assert client.post(path).status_code == 404, path
    assert "team a secret" not in client.get("/gallery").text
    assert "team a secret" not in client.get("/prompts").text
    committed_db.expire_all()
    assert committed_db.get(Job, queued.id).status == "queued"  # type: ignore[union-attr]


def test_page_actions_on_another_members_job_answer_like_the_api(
    committed_db: Session, sign_in: SignIn
) -> None:
    """A role refusal is a 403 on the pages as in the API, never a 200 with a notice."""
    alice = make_person(committed_db)
    bob = make_person(committed_db, team=alice.team)
    queued = add_job(committed_db, alice, "alice's queued job", status=JobStatus.QUEUED, cost=None)
    ready = add_job(committed_db, alice, "alice's picture")
    add_image(committed_db, ready)
    failed = add_job(committed_db, alice, "alice's failure", status=JobStatus.FAILED, cost=None)
    committed_db.commit()
    client = sign_in(bob)
    # Bob's view of Alice's queued card offers no Cancel button; Alice's does.
    assert f"/jobs/{queued.id}/cancel" not in client.get(f"/jobs/{queued.id}/card").text
    assert f"/jobs/{queued.id}/cancel" in sign_in(alice).get(f"/jobs/{queued.id}/card").text

    for headers in ({}, HX):
        cancel = client.post(f"/jobs/{queued.id}/cancel", headers=headers)
        assert cancel.status_code == 403, cancel.text[:200]
        assert "Only the person who queued this job or a manager" in cancel.text
        delete = client.post(f"/gallery/{ready.id}/delete", headers=headers)
        assert delete.status_code == 403
    committed_db.expire_all()
    assert committed_db.get(Job, queued.id).status == "queued"  # type: ignore[union-attr]
    assert committed_db.get(Job, ready.id).deleted_at is None  # type: ignore[union-attr]
    # Retry, vary and favourite are open to every member (each acts as themselves), on the
    # pages as in the API.
    assert client.post(f"/jobs/{failed.id}/retry", headers=HX).status_code == 200
    assert client.post(f"/gallery/{ready.id}/vary", headers=HX).status_code == 200
    assert client.post(f"/gallery/{ready.id}/favourite", headers=HX).status_code == 200
