"""The generate form over HTTP: explicit booleans reach BFL; the estimate is the reservation."""

from __future__ import annotations

import io
import re
from decimal import Decimal
from typing import Any

import pytest
from PIL import Image as PILImage
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.jobs.models import Job
from tests.factories import make_person
from tests.signed_in import SignIn, sign_in

__all__ = ["sign_in"]

HX = {"hx-request": "true"}


def _png(size: tuple[int, int], colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    PILImage.new("RGB", size, colour).save(buffer, "PNG")
    return buffer.getvalue()


def _jobs(db: Session) -> list[Job]:
    db.expire_all()
    return list(db.scalars(select(Job).order_by(Job.batch_index)))


def _shown_total(html: str) -> Decimal:
    shown = re.search(r"<strong>([\d.]+) credits</strong>", html)
    assert shown is not None, html
    return Decimal(shown.group(1))


@pytest.mark.parametrize(
    ("ticked", "sent"),
    [(["false"], False), (["false", "true"], True)],
    ids=["unticked", "ticked"],
)
def test_prompt_upsampling_is_sent_as_an_explicit_true_or_false(
    committed_db: Session, sign_in: SignIn, ticked: list[str], sent: bool
) -> None:
    # The form posts a hidden "false" before the checkbox; a ticked box adds "true" after it.
    alice = make_person(committed_db)
    response = sign_in(alice).post(
        "/generate",
        data={
            "model": "flux-2-flex",
            "prompt": "a paper lantern",
            "seed_mode": "fixed",
            "seed": "5",
            "count": "1",
            "prompt_upsampling": ticked,
        },
        headers=HX,
    )
    assert response.status_code == 200, response.text
    (job,) = _jobs(committed_db)
    # Stored in the params the worker sends to BFL, so the same seed reproduces the image.
    assert job.params["prompt_upsampling"] is sent


def test_the_form_offers_upsampling_with_bfls_default_and_a_hidden_false(
    committed_db: Session, sign_in: SignIn
) -> None:
    html = sign_in(make_person(committed_db)).get("/", params={"model": "flux-2-flex"}).text
    hidden = html.index('<input type="hidden" name="prompt_upsampling" value="false">')
    box = re.search(r'<input type="checkbox" id="prompt_upsampling"[^>]*>', html)
    assert box is not None and hidden < box.start()
    assert " checked" in box.group(0)  # BFL's default for flex is on


@pytest.mark.parametrize(
    "request_fields",
    [
        {"model": "flux-2-pro", "width": "1024", "height": "1024", "count": "1", "refs": 2},
        {"model": "flux-2-pro", "width": "1440", "height": "1440", "count": "3", "refs": 1},
        {
            "model": "flux-2-flex",
            "width": "2048",
            "height": "1024",
            "steps": "12",
            "count": "2",
            "refs": 3,
        },
        {"model": "flux-2-klein-4b", "width": "768", "height": "1360", "count": "4", "refs": 4},
        {"model": "flux-kontext-max", "aspect_ratio": "16:9", "count": "2", "refs": 2},
    ],
    ids=["pro-two-refs", "pro-2mp-batch", "flex-steps", "klein-four-refs", "kontext"],
)
def test_the_estimate_shown_is_what_generating_reserves(
    committed_db: Session, sign_in: SignIn, request_fields: dict[str, Any]
) -> None:
    alice = make_person(committed_db)
    client = sign_in(alice)
    fields = dict(request_fields)
    refs = fields.pop("refs")
    # References of different sizes: BFL prices each by its megapixels (1 to 4).
    sizes = [(40 + i, 30) if i % 2 else (1200 + 300 * i, 1000) for i in range(refs)]
    files = [
        ("reference_images", (f"ref{i}.png", _png(size, (10 * i, 90, 160)), "image/png"))
        for i, size in enumerate(sizes)
    ]
    # What the page asks while the person fills the form in (refs chosen, nothing uploaded yet).
    estimate = client.get(
        "/generate/estimate",
        params={
            **fields,
            "reference_count": str(refs),
            # The page reads the chosen files' sizes and sends them along.
            "reference_sizes": ",".join(f"{w}x{h}" for w, h in sizes),
            "prompt": "",
        },
    )
    assert estimate.status_code == 200

    posted = client.post(
        "/generate",
        data={**fields, "prompt": "a kite over dunes", "seed_mode": "random"},
        files=files,
        headers=HX,
    )
    assert posted.status_code == 200, posted.text
    jobs = _jobs(committed_db)
    assert len(jobs) == int(fields["count"]) and all(j.reference_count == refs for j in jobs)
    reserved = sum((j.estimated_credits for j in jobs), Decimal(0))
    assert _shown_total(estimate.text) == reserved
    # And the page the post answers with shows the same figure.
    assert _shown_total(posted.text) == reserved


def test_a_reused_reference_is_priced_by_its_stored_size(
    committed_db: Session, sign_in: SignIn
) -> None:
    alice = make_person(committed_db)
    client = sign_in(alice)
    wide = _png((2048, 1536), (200, 120, 40))  # 3 MP
    first = client.post(
        "/generate",
        data={
            "model": "flux-2-pro",
            "prompt": "a harbour",
            "count": "1",
            "width": "1024",
            "height": "1024",
        },
        files=[("reference_images", ("wide.png", wide, "image/png"))],
        headers=HX,
    )
    assert first.status_code == 200, first.text
    (job,) = _jobs(committed_db)
    stored = job.params["input_image"]
    # "Use these settings" brings the stored reference back; its price is read from storage.
    shown = client.get(
        "/generate/estimate",
        params={"model": "flux-2-pro", "width": "1024", "height": "1024", "count": "1",
                "stored_reference": stored},
    )  # fmt: skip
    assert _shown_total(shown.text) == job.estimated_credits == Decimal("7.50")
