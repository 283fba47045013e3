"""A dropped image fills the generate form with its recipe; any other file is refused clearly."""

from __future__ import annotations

import io
from urllib.parse import parse_qs, urlsplit

from PIL import Image as PILImage
from sqlalchemy.orm import Session

from tests.factories import make_person
from tests.gallery.rows import add_image, add_job
from tests.signed_in import SignIn


def test_an_image_downloaded_from_the_studio_fills_the_generate_form(
    committed_db: Session, sign_in: SignIn
) -> None:
    carol = make_person(committed_db)
    params = {
        "prompt": "a glass greenhouse in snow",
        "width": 1024,
        "height": 768,
        "seed": 77,
        "steps": 28,
        "guidance": 3.5,
        "safety_tolerance": 2,
        "output_format": "jpeg",
    }
    job = add_job(committed_db, carol, params["prompt"], model="flux-2-flex", params=params)  # type: ignore[arg-type]
    add_image(committed_db, job)
    committed_db.commit()
    client = sign_in(carol)
    downloaded = client.get(f"/images/{job.id}/original?download=1").content

    answer = client.post("/recipes/import", files={"file": ("kept.jpg", downloaded, "image/jpeg")})
    assert answer.status_code == 303
    target = answer.headers["location"]
    query = parse_qs(urlsplit(target).query)
    assert query["model"] == ["flux-2-flex"] and query["seed"] == [str(job.result_seed)]
    page = client.get(target)
    assert page.status_code == 200
    html = page.text
    assert "a glass greenhouse in snow" in html
    assert 'name="model" value="flux-2-flex" checked' in html or (
        'value="flux-2-flex"' in html and "checked" in html
    )
    assert 'value="28"' in html and 'value="3.5"' in html
    assert f'value="{job.result_seed}"' in html

    # Through htmx the page is told where to go.
    hx = client.post(
        "/recipes/import",
        files={"file": ("kept.jpg", downloaded, "image/jpeg")},
        headers={"hx-request": "true"},
    )
    assert hx.status_code == 204 and hx.headers["hx-redirect"] == target


def test_a_file_without_a_recipe_gets_a_clear_message(
    committed_db: Session, sign_in: SignIn
) -> None:
    dan = make_person(committed_db)
    client = sign_in(dan)
    buffer = io.BytesIO()
    PILImage.new("RGB", (10, 10), "green").save(buffer, "PNG")
    plain = client.post(
        "/recipes/import",
        files={"file": ("holiday.png", buffer.getvalue(), "image/png")},
        headers={"hx-request": "true"},
    )
    assert plain.status_code == 200
    assert "No recipe imported" in plain.text and "carries no studio recipe" in plain.text

    text_file = client.post(
        "/recipes/import",
        files={"file": ("notes.txt", b"hello", "text/plain")},
        headers={"hx-request": "true"},
    )
    assert "not a PNG, JPEG or WebP image" in text_file.text

    nothing = client.post("/recipes/import", data={"x": "1"})
    assert nothing.status_code == 422
    assert "choose or drop an image file" in nothing.text
