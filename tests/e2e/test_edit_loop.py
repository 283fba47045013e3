"""The edit loop in a real Chromium, with a real worker and the BFL emulator: drop references,
reorder them, generate, see them on the card and the detail page, and edit the result again.
At every step the page's estimate is what the service then reserves."""

from __future__ import annotations

import base64
import io
import socket
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.bfl.catalogue import estimate_cost, follow_input_size
from app.emulator import EmulatorConfig, EmulatorServer
from app.jobs.models import Job, JobReference, ReferenceImage
from app.recipes.embed import read_recipe
from app.recipes.recipe import RECIPE_KEY
from app.units import credits_text
from tests.browser import ARTIFACTS, chromium
from tests.factories import make_person
from tests.pipeline_support import WebProcess, WorkerProcess, pipeline_env

pytestmark = [pytest.mark.browser, pytest.mark.slow]

WAIT_MS = 30_000
WIDE = (1500, 1000)  # 1.43 MP: two input megapixels
SMALL = (800, 600)

_DROP = """
async (files) => {
  const transfer = new DataTransfer();
  for (const [name, b64] of files) {
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    transfer.items.add(new File([bytes], name, { type: "image/png" }));
  }
  const zone = document.querySelector("[data-reference-drop]");
  const init = { dataTransfer: transfer, bubbles: true, cancelable: true };
  zone.dispatchEvent(new DragEvent("dragover", init));
  zone.dispatchEvent(new DragEvent("drop", init));
}
"""

_FIRST_LABEL = (
    "t => document.querySelector('[data-reference-item] .reference-label').textContent"
    ".startsWith(t)"
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def stack() -> Iterator[str]:
    with EmulatorServer(EmulatorConfig(latency_mean_s=0.5, latency_jitter_s=0.1)) as emulator:
        env = pipeline_env(emulator)
        with WorkerProcess(env, concurrency=1), WebProcess(env, _free_port()) as web:
            yield f"http://localhost:{web.port}"


def _png(size: tuple[int, int], colour: tuple[int, int, int]) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _wait_for_estimate(page: Any, credits: str) -> None:
    page.wait_for_function(
        "t => document.querySelector('#estimate strong').textContent.trim() === t + ' credits'",
        arg=credits,
    )


def _order(page: Any) -> list[str]:
    values: list[str] = page.eval_on_selector_all(
        "[data-reference-item] input[name=stored_reference]", "nodes => nodes.map(n => n.value)"
    )
    return [v.rsplit("/", 1)[-1].split(".")[0] for v in values]


def test_drop_reorder_generate_see_and_edit_again(stack: str, committed_db: Session) -> None:
    alice = make_person(committed_db)
    committed_db.commit()
    with chromium() as browser:
        page = browser.new_context(
            viewport={"width": 1280, "height": 900}, accept_downloads=True
        ).new_page()
        page.set_default_timeout(WAIT_MS)
        try:
            _edit_loop(page, stack, alice, committed_db)
        except BaseException:
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "edit-loop-failure.png"), full_page=True)
            raise


def _edit_loop(page: Any, base: str, alice: Any, db: Session) -> None:
    page.goto(f"{base}/login")
    page.fill("#login-email", alice.user.email)
    page.fill("#login-password", alice.password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/")
    page.check("input[name=model][value=flux-2-pro]")

    # Two files dropped: both stored, shown as thumbnails, and the size follows image 1.
    page.evaluate(
        _DROP, [["wide.png", _png(WIDE, (200, 40, 40))], ["small.png", _png(SMALL, (40, 40, 200))]]
    )
    page.wait_for_function("() => document.querySelectorAll('[data-reference-item]').length === 2")
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-reference-item] img')]"
        ".every(i => i.complete && i.naturalWidth > 0)"
    )
    assert page.input_value("#aspect_preset") == "input"
    wide_sha, small_sha = _order(page)
    rows = {r.sha256: r for r in db.scalars(select(ReferenceImage)).all()}
    assert (rows[wide_sha].width, rows[wide_sha].height) == WIDE
    _wait_for_estimate(
        page,
        credits_text(
            estimate_cost(
                "flux-2-pro", *follow_input_size(WIDE), reference_sizes=[WIDE, SMALL]
            ).credits
        ),
    )

    # Reorder from the keyboard: "move later" on image 1 makes the small one first.
    page.focus("[data-reference-item]:first-child [data-move-reference='1']")
    page.keyboard.press("Enter")
    page.wait_for_function(_FIRST_LABEL, arg="1 · 800")
    assert _order(page) == [small_sha, wide_sha]
    _wait_for_estimate(
        page,
        credits_text(
            estimate_cost(
                "flux-2-pro", *follow_input_size(SMALL), reference_sizes=[SMALL, WIDE]
            ).credits
        ),
    )
    # And back by dragging one item onto the other.
    page.drag_and_drop(
        "[data-reference-item]:nth-child(2)",
        "[data-reference-item]:first-child",
        target_position={"x": 5, "y": 5},
    )
    page.wait_for_function(_FIRST_LABEL, arg="1 · 1500")
    assert _order(page) == [wide_sha, small_sha]

    # Model, preset, size, count and steps: the estimate follows each change.
    page.select_option("#aspect_preset", "1:1")
    _wait_for_estimate(
        page,
        credits_text(
            estimate_cost("flux-2-pro", 1024, 1024, reference_sizes=[WIDE, SMALL]).credits
        ),
    )
    page.check("input[name=model][value=flux-2-flex]")
    page.wait_for_selector("[data-field=steps]:not([hidden])")
    page.fill("#steps", "20")
    page.select_option("#aspect_preset", "custom")
    page.fill("#width", "1536")
    page.fill("#height", "1024")
    page.dispatch_event("#height", "change")
    each = estimate_cost("flux-2-flex", 1536, 1024, reference_sizes=[WIDE, SMALL]).credits
    _wait_for_estimate(page, credits_text(each))
    page.fill("#count", "2")
    page.dispatch_event("#count", "change")
    _wait_for_estimate(page, credits_text(each * 2))
    # Removing image 2 prices one reference.
    page.click("[data-reference-item]:nth-child(2) [data-remove-reference]")
    page.wait_for_function("() => document.querySelectorAll('[data-reference-item]').length === 1")
    each = estimate_cost("flux-2-flex", 1536, 1024, reference_sizes=[WIDE]).credits
    _wait_for_estimate(page, credits_text(each * 2))
    shown = Decimal(page.inner_text("#estimate strong").split()[0])

    prompt = "the red card, now at sunset"
    page.fill("#prompt", prompt)
    page.click("button[type=submit]")
    page.wait_for_selector(f".job-card:has-text('{prompt}')")
    db.expire_all()
    jobs = db.scalars(select(Job).where(Job.prompt == prompt)).all()
    assert len(jobs) == 2
    assert sum((j.estimated_credits for j in jobs), Decimal(0)) == shown

    # The worker and the emulator finish them; the card shows the reference.
    card = page.locator(".job-card", has_text=prompt).first
    card.locator(".badge-ready").wait_for(timeout=60_000)
    assert card.locator(f".reference-strip img[src='/references/{wide_sha}/thumb']").count() == 1
    card.locator("a", has_text="Open").click()
    page.wait_for_url(f"{base}/gallery/*")
    page.wait_for_selector(f".reference-strip img[src='/references/{wide_sha}/thumb']")
    assert page.eval_on_selector(".reference-strip img", "i => i.complete && i.naturalWidth > 0")
    _download_carries_the_recipe(page, db)

    # "Edit with this": the result is reference 1 of a new form.
    page.click("a[data-edit-with]")
    page.wait_for_url(f"{base}/?edit=*")
    page.wait_for_function("() => document.querySelectorAll('[data-reference-item]').length === 1")
    assert page.input_value("#aspect_preset") == "input"
    (result_sha,) = _order(page)
    result = db.scalars(select(ReferenceImage).where(ReferenceImage.sha256 == result_sha)).one()
    size = (result.width, result.height)
    _wait_for_estimate(
        page,
        credits_text(
            estimate_cost("flux-2-flex", *follow_input_size(size), reference_sizes=[size]).credits
        ),
    )


def _download_carries_the_recipe(page: Any, db: Session) -> None:
    """The detail page's download link gives the original with the job's recipe inside."""
    job_id = page.url.rsplit("/", 1)[-1].split("?")[0]
    with page.expect_download() as waiting:
        page.click("a[href$='/original?download=1']")
    path = waiting.value.path()
    with Image.open(path) as picture:
        picture.load()
        kind = picture.format
        texts = getattr(picture, "text", {}) if kind == "PNG" else {}
        text = texts.get(RECIPE_KEY) or picture.info.get("xmp")
    assert text, f"the downloaded {kind} carries no recipe"
    recipe = read_recipe(text)
    assert recipe is not None
    db.expire_all()
    job = db.get(Job, uuid.UUID(job_id))
    assert job is not None
    seed = job.result_seed if job.result_seed is not None else job.seed
    assert seed is not None
    stored = db.scalars(
        select(ReferenceImage.sha256)
        .join(JobReference, JobReference.reference_id == ReferenceImage.id)
        .where(JobReference.job_id == job.id)
        .order_by(JobReference.position)
    ).all()
    assert stored
    assert recipe["prompt"] == job.prompt
    assert recipe["model"] == job.model
    assert recipe["seed"] == seed
    assert recipe["job_id"] == str(job.id)
    assert recipe["reference_images"] == [{"sha256": sha} for sha in stored]
