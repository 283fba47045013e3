"""Every downloaded original carries its recipe; the pixels are the stored ones, untouched."""

from __future__ import annotations

import io
import json

from fastapi.testclient import TestClient
from PIL import Image as PILImage
from sqlalchemy.orm import Session

from app.recipes.embed import embed_recipe, read_recipe
from app.recipes.recipe import Recipe, recipe_of
from app.storage import get_storage
from tests.api.conftest import MakeCaller, make_ready_job
from tests.factories import make_person
from tests.gallery.rows import add_image, add_job
from tests.signed_in import SignIn


def _pixels(data: bytes) -> bytes:
    with PILImage.open(io.BytesIO(data)) as picture:
        return picture.tobytes()


def test_the_api_original_is_a_png_with_the_recipe_as_text_chunks(
    committed_db: Session, client: TestClient, make_caller: MakeCaller
) -> None:
    alice = make_caller()
    job, stored = make_ready_job(committed_db, alice, prompt="a copper kettle on a stove")
    job.params = {**job.params, "safety_tolerance": 3, "output_format": "png"}
    job.result_seed = 4242
    committed_db.commit()

    response = client.get(f"/api/v1/images/{job.id}/original", headers=alice.headers)
    assert response.status_code == 200
    served = response.content
    assert served != stored and len(served) > len(stored)
    assert _pixels(served) == _pixels(stored)
    with PILImage.open(io.BytesIO(served)) as picture:
        text = picture.text  # type: ignore[attr-defined]
    recipe = json.loads(text["flux-recipe"])
    assert recipe["prompt"] == "a copper kettle on a stove"
    assert recipe["model"] == "flux-2-pro"
    assert recipe["seed"] == 4242  # the seed BFL used, not the one asked for (7)
    assert (recipe["width"], recipe["height"]) == (1024, 1024)
    assert recipe["safety_tolerance"] == 3 and recipe["output_format"] == "png"
    assert recipe["job_url"].endswith(f"/gallery/{job.id}")
    assert "reference_images" not in recipe
    parameters = text["parameters"]
    assert parameters.startswith("a copper kettle on a stove\n")
    assert "Seed: 4242" in parameters and "Size: 1024x1024" in parameters
    # The stored file itself is as BFL made it.
    key = f"teams/{alice.team.id}/{job.id}/original.png"
    assert get_storage().get(key) == stored


def test_a_page_download_of_a_jpeg_carries_xmp_and_exif_user_comment(
    committed_db: Session, sign_in: SignIn
) -> None:
    bob = make_person(committed_db)
    params = {
        "prompt": "a lantern in fog",
        "width": 1024,
        "height": 768,
        "seed": 9,
        "steps": 30,
        "guidance": 4.5,
        "prompt_upsampling": True,
        "safety_tolerance": 2,
        "output_format": "jpeg",
        "input_image": "stored:teams/x/references/" + "ab" * 32 + ".png",
    }
    job = add_job(committed_db, bob, "a lantern in fog", model="flux-2-flex", params=params)
    image = add_image(committed_db, job)
    committed_db.commit()
    stored = get_storage().get(image.storage_key)

    response = sign_in(bob).get(f"/images/{job.id}/original?download=1")
    assert response.status_code == 200
    assert response.headers["content-disposition"].startswith("attachment;")
    assert _pixels(response.content) == _pixels(stored)
    with PILImage.open(io.BytesIO(response.content)) as picture:
        recipe = read_recipe(picture.info["xmp"])
        comment = picture.getexif().get_ifd(0x8769)[0x9286]
    assert recipe is not None
    assert recipe["model"] == "flux-2-flex" and recipe["prompt"] == "a lantern in fog"
    assert recipe["steps"] == 30 and recipe["guidance"] == 4.5
    assert recipe["prompt_upsampling"] is True
    assert recipe["reference_images"] == [{"sha256": "ab" * 32}]
    assert isinstance(comment, bytes) and comment.startswith(b"UNICODE\x00")
    assert "Steps: 30" in comment[8:].decode("utf-16-be")


def test_webp_gets_an_xmp_chunk_and_keeps_its_pixels_lossy_and_lossless() -> None:
    recipe = Recipe({"prompt": "a kite <over> the sea & sand", "model": "flux-2-pro", "seed": 1})
    for options in ({"quality": 80}, {"lossless": True}):
        buffer = io.BytesIO()
        PILImage.new("RGBA", (40, 30), (9, 120, 200, 255)).save(buffer, "WEBP", **options)
        stored = buffer.getvalue()
        served = embed_recipe(stored, recipe)
        assert _pixels(served) == _pixels(stored)
        with PILImage.open(io.BytesIO(served)) as picture:
            assert read_recipe(picture.info["xmp"]) == recipe.values


def test_embedding_twice_replaces_the_recipe_rather_than_adding_a_second() -> None:
    buffer = io.BytesIO()
    PILImage.new("RGB", (8, 8), "red").save(buffer, "PNG")
    first = embed_recipe(buffer.getvalue(), Recipe({"prompt": "one", "model": "m"}))
    second = embed_recipe(first, Recipe({"prompt": "two", "model": "m"}))
    assert second.count(b"flux-recipe") == 1
    with PILImage.open(io.BytesIO(second)) as picture:
        assert json.loads(picture.text["flux-recipe"])["prompt"] == "two"  # type: ignore[attr-defined]


def test_a_prompt_too_long_for_one_jpeg_segment_is_shortened_and_marked(
    committed_db: Session,
) -> None:
    buffer = io.BytesIO()
    PILImage.new("RGB", (8, 8), "blue").save(buffer, "JPEG")
    long_prompt = "ünïcode words " * 4_000  # ~56,000 characters, over 100 KB as UTF-8
    served = embed_recipe(buffer.getvalue(), Recipe({"prompt": long_prompt, "model": "m"}))
    with PILImage.open(io.BytesIO(served)) as picture:
        recipe = read_recipe(picture.info["xmp"])
    assert recipe is not None and recipe["prompt_truncated"] is True
    assert long_prompt.startswith(str(recipe["prompt"]))


def test_recipe_of_reads_the_job_as_stored(committed_db: Session) -> None:
    person = make_person(committed_db)
    job = add_job(committed_db, person, "a quiet harbour")
    values = recipe_of(job).values
    assert values["seed"] == job.result_seed and values["output_format"] == "jpeg"
    assert values["job_id"] == str(job.id)
