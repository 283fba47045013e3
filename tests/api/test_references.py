"""Reference images: decoded once, stored once by content, linked in order, shown by link."""

from __future__ import annotations

import base64
import io
import os
from datetime import timedelta
from decimal import Decimal

from fastapi.testclient import TestClient
from PIL import Image as PILImage
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.bfl.catalogue import (
    MAX_INPUT_PIXELS,
    estimate_payload_cost,
    follow_input_size,
    get_model,
)
from app.db import utcnow
from app.jobs.models import Job, JobReference, ReferenceImage
from app.jobs.references import purge_unused, remove_objects
from app.storage import get_storage
from tests.api.conftest import MakeCaller, make_ready_job, picture, sign_in

BODY = {"model": "flux-2-pro", "prompt": "the same teapot, in blue"}


def _b64_lines(data: bytes) -> str:
    """What the `base64` command prints: 76-character lines."""
    text = base64.b64encode(data).decode()
    return "\n".join(text[i : i + 76] for i in range(0, len(text), 76)) + "\n"


def _noise_png(side: int) -> bytes:
    buffer = io.BytesIO()
    PILImage.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(buffer, "PNG")
    return buffer.getvalue()


def _refs(db: Session, job_id: str) -> list[ReferenceImage]:
    db.expire_all()
    return list(
        db.scalars(
            select(ReferenceImage)
            .join(JobReference, JobReference.reference_id == ReferenceImage.id)
            .where(JobReference.job_id == job_id)
            .order_by(JobReference.position)
        )
    )


def test_every_encoding_of_one_picture_is_stored_once_and_linked_in_order(
    client: TestClient, make_caller: MakeCaller, committed_db: Session
) -> None:
    caller = make_caller()
    red, green = picture("PNG", (40, 30)), picture("JPEG", (20, 10))
    plain = base64.b64encode(red).decode()
    sent = client.post(
        "/api/v1/jobs",
        json={
            **BODY,
            "params": {
                "input_image": f"data:image/png;base64,{plain}",
                "input_image_2": _b64_lines(green),
            },
        },
        headers=caller.headers,
    )  # fmt: skip
    assert sent.status_code == 201, sent.text
    again = client.post(
        "/api/v1/jobs",
        data={"model": "flux-2-pro", "prompt": "again", "params": "{}"},
        files=[
            ("reference_images", ("g.jpg", green, "image/jpeg")),
            ("reference_images", ("r.png", red, "image/png")),
        ],
        headers=caller.headers,
    )
    assert again.status_code == 201, again.text
    first, second = sent.json()["jobs"][0], again.json()["jobs"][0]
    assert [r["sha256"] for r in first["references"]] == [
        r["sha256"] for r in reversed(second["references"])
    ]
    assert [r["position"] for r in first["references"]] == [1, 2]
    rows = committed_db.scalar(
        select(func.count())
        .select_from(ReferenceImage)
        .where(ReferenceImage.team_id == caller.team.id)
    )
    assert rows == 2
    assert [r.sha256 for r in _refs(committed_db, first["id"])] == [
        r["sha256"] for r in first["references"]
    ]
    # The link serves the stored bytes; nothing in the answer is the picture itself.
    got = client.get(first["references"][0]["url"], headers=caller.headers)
    assert got.status_code == 200 and got.content == red
    thumb = client.get(first["references"][1]["thumbnail_url"], headers=caller.headers)
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/webp"
    assert plain[:40] not in sent.text and "stored:" not in sent.text


def test_a_truncated_reference_is_refused_naming_its_field_before_anything_is_paid(
    client: TestClient, make_caller: MakeCaller, committed_db: Session
) -> None:
    caller = make_caller()
    whole = picture("PNG", (64, 64))
    cut = base64.b64encode(picture("JPEG", (300, 200))[:-400]).decode()
    refused = client.post(
        "/api/v1/jobs",
        json={
            **BODY,
            "params": {"input_image": base64.b64encode(whole).decode(), "input_image_2": cut},
        },
        headers=caller.headers,
    )  # fmt: skip
    assert refused.status_code == 422, refused.text
    error = refused.json()["error"]
    assert [f["field"] for f in error["fields"]] == ["params.input_image_2"]
    message = error["fields"][0]["message"]
    assert (
        "input_image_2" in message and "truncated" in message and "send the whole file" in message
    )
    jobs = committed_db.scalar(
        select(func.count()).select_from(Job).where(Job.team_id == caller.team.id)
    )
    assert jobs == 0


def test_exif_orientation_is_applied_and_large_images_are_downscaled(
    client: TestClient, make_caller: MakeCaller, committed_db: Session
) -> None:
    caller = make_caller()
    turned = io.BytesIO()
    exif = PILImage.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to view"
    PILImage.new("RGB", (60, 20), (10, 20, 30)).save(turned, "JPEG", exif=exif.tobytes())
    side = 2100  # 4.41 MP, above the catalogue's input limit
    big = io.BytesIO()
    PILImage.new("RGB", (side, side), (90, 90, 200)).save(big, "PNG")
    answer = client.post(
        "/api/v1/jobs",
        data={"model": "flux-2-pro", "prompt": "p", "params": "{}"},
        files=[
            ("reference_images", ("turned.jpg", turned.getvalue(), "image/jpeg")),
            ("reference_images", ("big.png", big.getvalue(), "image/png")),
        ],
        headers=caller.headers,
    )
    assert answer.status_code == 201, answer.text
    job = answer.json()["jobs"][0]
    turned_ref, big_ref = job["references"]
    assert (turned_ref["width"], turned_ref["height"]) == (20, 60)
    assert big_ref["width"] * big_ref["height"] <= MAX_INPUT_PIXELS < side * side
    assert get_model("flux-2-pro").max_input_pixels == MAX_INPUT_PIXELS
    stored = client.get(big_ref["url"], headers=caller.headers).content
    with PILImage.open(io.BytesIO(stored)) as image:
        assert image.size == (big_ref["width"], big_ref["height"])
    # No size was asked for: the edit follows reference 1 (BFL's default), priced so.
    assert (job["width"], job["height"]) == follow_input_size((20, 60)) == (64, 64)
    row = committed_db.get(Job, job["id"])
    assert row is not None and "width" not in row.params and "height" not in row.params
    expected = estimate_payload_cost(
        "flux-2-pro",
        {"input_image": "x", "input_image_2": "x"},
        reference_sizes=[(20, 60), (big_ref["width"], big_ref["height"])],
    ).credits
    assert Decimal(job["estimated_credits"]) == expected


def test_a_big_inline_reference_never_comes_back_inline(
    client: TestClient, make_caller: MakeCaller, committed_db: Session
) -> None:
    caller = make_caller()
    data = _noise_png(480)
    encoded = base64.b64encode(data).decode()
    assert 800_000 < len(encoded) < 1_100_000
    made = client.post(
        "/api/v1/jobs", json={**BODY, "params": {"input_image": encoded}}, headers=caller.headers
    )
    assert made.status_code == 201, made.text
    job_id = made.json()["jobs"][0]["id"]
    assert len(made.content) < 20_000
    listed = client.get("/api/v1/jobs?limit=50", headers=caller.headers)
    assert listed.status_code == 200 and len(listed.content) < 20_000
    assert listed.json()["items"][0]["references"][0]["url"].startswith("/api/v1/references/")
    one = client.get(f"/api/v1/jobs/{job_id}", headers=caller.headers)
    assert len(one.content) < 20_000 and encoded[:64] not in one.text

    sign_in(committed_db, client, caller.person)
    for page in (f"/gallery/{job_id}", "/", f"/?from={job_id}", "/gallery"):
        shown = client.get(page)
        assert shown.status_code == 200, page
        assert len(shown.content) < 200_000 and encoded[:64] not in shown.text, page
    detail = client.get(f"/gallery/{job_id}").text
    sha = made.json()["jobs"][0]["references"][0]["sha256"]
    assert f"/references/{sha}/thumb" in detail
    assert client.get(f"/references/{sha}").content == data


def test_vary_and_use_these_settings_bring_back_an_api_jobs_references(
    client: TestClient, make_caller: MakeCaller, committed_db: Session
) -> None:
    caller = make_caller()
    ref = picture("PNG", (1500, 1000))
    made = client.post(
        "/api/v1/jobs",
        json={
            **BODY,
            "params": {"width": 512, "height": 512},
            "reference_images": [_b64_lines(ref)],
        },
        headers=caller.headers,
    )  # fmt: skip
    assert made.status_code == 201, made.text
    job = made.json()["jobs"][0]
    varied = client.post(f"/api/v1/jobs/{job['id']}/vary", headers=caller.headers)
    assert varied.status_code == 201, varied.text
    new = varied.json()["jobs"][0]
    assert [r["sha256"] for r in new["references"]] == [r["sha256"] for r in job["references"]]
    assert new["estimated_credits"] == job["estimated_credits"]

    sign_in(committed_db, client, caller.person)
    form = client.get(f"/?from={job['id']}")
    sha = job["references"][0]["sha256"]
    assert f"/references/{sha}/thumb" in form.text and 'name="stored_reference"' in form.text
    estimate = client.get(
        "/generate/estimate",
        params={"model": "flux-2-pro", "width": "512", "height": "512", "count": "1",
                "stored_reference": f"stored:teams/{caller.team.id}/references/{sha}.png"},
    )  # fmt: skip
    assert f"{Decimal(job['estimated_credits']).normalize():f}" in estimate.text


def test_edit_with_this_opens_the_form_with_the_image_as_reference_one(
    client: TestClient, make_caller: MakeCaller, committed_db: Session
) -> None:
    caller = make_caller()
    job, original = make_ready_job(committed_db, caller)
    headers = sign_in(committed_db, client, caller.person)
    assert 'href="/?edit=' in client.get(f"/gallery/{job.id}").text
    page = client.get(f"/?edit={job.id}")
    assert page.status_code == 200
    ref = committed_db.scalars(
        select(ReferenceImage).where(ReferenceImage.team_id == caller.team.id)
    ).one()
    assert f"/references/{ref.sha256}/thumb" in page.text
    assert 'value="input" data-width="" data-height="" selected' in page.text
    posted = client.post(
        "/generate",
        data={"model": "flux-2-pro", "prompt": "make it night", "count": "1",
              "stored_reference": f"stored:{ref.storage_key}", **headers_form(headers)},
        headers={"HX-Request": "true"},
    )  # fmt: skip
    assert posted.status_code == 200, posted.text
    made = committed_db.scalars(
        select(Job).where(Job.team_id == caller.team.id, Job.id != job.id)
    ).one()
    assert [r.id for r in _refs(committed_db, str(made.id))] == [ref.id]
    assert (made.width, made.height) == follow_input_size((32, 24))
    assert get_storage().get(ref.storage_key) == original


def headers_form(headers: dict[str, str]) -> dict[str, str]:
    return {"csrf_token": headers["X-CSRF-Token"]}


def test_deleting_a_job_keeps_references_other_jobs_use_and_purge_is_safe(
    client: TestClient, make_caller: MakeCaller, committed_db: Session
) -> None:
    caller = make_caller()
    shared, lone = picture("PNG", (30, 30)), picture("PNG", (31, 31))
    ids = []
    for refs in ([shared], [shared]):
        made = client.post(
            "/api/v1/jobs",
            json={**BODY, "reference_images": [base64.b64encode(r).decode() for r in refs]},
            headers=caller.headers,
        )
        assert made.status_code == 201, made.text
        ids.append(made.json()["jobs"][0]["id"])
    headers = sign_in(committed_db, client, caller.person)
    unused = client.post(
        "/references",
        data={"model": "flux-2-pro"},
        files={"file": ("lone.png", lone, "image/png")},
        headers=headers,
    )
    assert unused.status_code == 200, unused.text
    assert client.delete(f"/api/v1/jobs/{ids[0]}", headers=caller.headers).status_code == 200
    sha = client.get(f"/api/v1/jobs/{ids[1]}", headers=caller.headers).json()["references"][0][
        "sha256"
    ]

    keys = purge_unused(committed_db, before=utcnow() + timedelta(seconds=1))
    committed_db.commit()
    assert remove_objects(committed_db, keys) == 2  # the unused upload and its thumbnail
    assert client.get(f"/api/v1/references/{sha}", headers=caller.headers).content == shared
    assert client.get(f"/references/{unused.json()['sha256']}").status_code == 404
    # A picture used again inside the grace period is kept.
    assert purge_unused(committed_db, before=utcnow() - timedelta(hours=1)) == []
