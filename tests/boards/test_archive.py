"""The ZIP of many images streams: one image in memory at a time, recipes inside, manifests."""

from __future__ import annotations

import csv
import io
import json
import os
import tracemalloc
import zipfile
from decimal import Decimal

from fastapi.testclient import TestClient
from PIL import Image as PILImage
from sqlalchemy.orm import Session

from app.bulk.archive import plan_archive, stream_archive
from app.jobs.models import Image, Job
from app.recipes.embed import read_recipe
from app.storage import get_storage, image_keys
from tests.api.conftest import MakeCaller
from tests.factories import Person, make_person
from tests.gallery.rows import add_image, add_job


def _noise_jpeg() -> bytes:
    """A JPEG of random pixels: ~80 KB that no compression can shrink."""
    picture = PILImage.frombytes("RGB", (256, 256), os.urandom(256 * 256 * 3))
    buffer = io.BytesIO()
    picture.save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def _many_images(db: Session, person: Person, count: int, data: bytes) -> list[Job]:
    storage = get_storage()
    jobs = []
    for i in range(count):
        job = add_job(db, person, f"frame {i} of a long film", cost=Decimal("0.75"))
        key, thumb = image_keys(person.team.id, job.id, "jpg")
        storage.put(key, data, "image/jpeg")
        db.add(
            Image(
                job_id=job.id,
                team_id=job.team_id,
                storage_key=key,
                thumb_key=thumb,
                content_type="image/jpeg",
                width=256,
                height=256,
                size_bytes=len(data),
            )
        )
        jobs.append(job)
    db.flush()
    return jobs


def test_a_thousand_images_stream_with_bounded_memory(committed_db: Session) -> None:
    person = make_person(committed_db)
    original = _noise_jpeg()
    jobs = _many_images(committed_db, person, 1000, original)
    committed_db.commit()
    plan = plan_archive(committed_db, team_id=person.team.id, job_ids=[j.id for j in jobs])
    assert len(plan.entries) == 1000 and plan.skipped == []

    total, largest, first_bytes = 0, 0, bytearray()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        for piece in stream_archive(plan, get_storage()):
            total += len(piece)
            largest = max(largest, len(piece))
            if len(first_bytes) < 4:
                first_bytes += piece[:4]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    archive_size = 1000 * len(original)
    assert total > archive_size  # every image went out, with its recipe added
    assert bytes(first_bytes[:4]) == b"PK\x03\x04"
    # No piece is more than one image and its headers, and memory never held many at once:
    # the archive is ~80 MB; what stays is the archive's directory and the manifests (a few
    # hundred bytes an image), never the images.
    assert largest < 2 * len(original) + 64 * 1024
    assert peak < 8 * 1024 * 1024 and peak * 10 < total, (peak, total)
    print(
        f"archive {total / 1e6:.1f} MB, largest piece {largest / 1e3:.0f} KB, "
        f"traced peak {peak / 1e6:.2f} MB"
    )


def test_the_api_zip_holds_originals_with_recipes_and_both_manifests(
    committed_db: Session, client: TestClient, make_caller: MakeCaller
) -> None:
    alice = make_caller()
    ready = [add_job(committed_db, alice.person, f"a paper crane {i}") for i in range(3)]
    for job in ready:
        add_image(committed_db, job)
    waiting = add_job(committed_db, alice.person, "still cooking")
    committed_db.commit()

    answer = client.post(
        "/api/v1/images/archive",
        json={"job_ids": [str(j.id) for j in [*ready, waiting]]},
        headers=alice.headers,
    )
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/zip"
    assert answer.headers["content-disposition"].startswith('attachment; filename="flux-studio-')
    with zipfile.ZipFile(io.BytesIO(answer.content)) as archive:
        names = archive.namelist()
        assert names[-2:] == ["manifest.csv", "manifest.json"]
        images = names[:-2]
        assert len(images) == 3
        stored = get_storage().get(image_keys(alice.team.id, ready[0].id, "jpg")[0])
        for name in images:
            data = archive.read(name)
            with PILImage.open(io.BytesIO(data)) as picture:
                recipe = read_recipe(picture.info["xmp"])
                assert recipe is not None and str(recipe["prompt"]).startswith("a paper crane")
                with PILImage.open(io.BytesIO(stored)) as plain:
                    assert picture.tobytes() == plain.tobytes()
        rows = list(csv.DictReader(io.StringIO(archive.read("manifest.csv").decode())))
        manifest = json.loads(archive.read("manifest.json"))
    assert {r["file"] for r in rows} == set(images)
    assert all(r["cost_credits"] == "3.0000" and r["model"] == "flux-2-pro" for r in rows)
    assert {i["recipe"]["job_id"] for i in manifest["images"]} == {str(j.id) for j in ready}
    assert manifest["skipped"] == [
        {"job_id": str(waiting.id), "reason": "no stored image in this team"}
    ]


def test_the_page_zip_takes_every_image_the_filter_matches(
    committed_db: Session, client: TestClient, make_caller: MakeCaller
) -> None:
    from tests.api.conftest import sign_in

    alice = make_caller()
    for i in range(40):
        add_image(committed_db, add_job(committed_db, alice.person, f"a tulip {i}"))
    add_image(committed_db, add_job(committed_db, alice.person, "a cactus"))
    committed_db.commit()
    csrf = sign_in(committed_db, client, alice.person)
    answer = client.post(
        "/gallery/bulk/zip", data={"all_matching": "1", "q": "tulip"}, headers=csrf
    )
    assert answer.status_code == 200
    with zipfile.ZipFile(io.BytesIO(answer.content)) as archive:
        manifest = json.loads(archive.read("manifest.json"))
    prompts = {i["recipe"]["prompt"] for i in manifest["images"]}
    assert len(prompts) == 40 and "a cactus" not in prompts
