"""The studio in a real Chromium against a real stack: web server, Celery worker and emulator."""

from __future__ import annotations

import io
import os
import re
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.bfl.catalogue import estimate_cost
from app.emulator import EmulatorConfig, EmulatorServer
from app.jobs.models import Job
from app.units import credits_text
from tests.browser import ARTIFACTS, ROOT, chromium
from tests.factories import Person, make_person
from tests.pipeline_support import WebProcess, WorkerProcess, pipeline_env

pytestmark = [pytest.mark.browser, pytest.mark.pipeline, pytest.mark.slow]

#: The README shows this picture; keep it small enough for a repository.
SCREENSHOT_BUDGET = 300 * 1024
WAIT_MS = 45_000


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def stack() -> Iterator[str]:
    """Emulator, worker and web server sharing this run's database, Redis prefix and media."""
    with EmulatorServer(EmulatorConfig(latency_mean_s=1.2, latency_jitter_s=0.2)) as emulator:
        env = pipeline_env(emulator)
        with WorkerProcess(env, concurrency=2), WebProcess(env, _free_port()) as web:
            # localhost, not 127.0.0.1: browsers treat it as a secure context, so the
            # __Host- Secure session cookie works over plain http.
            yield f"http://localhost:{web.port}"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as launched:
        yield launched


LAPTOP = {"width": 1280, "height": 900}
#: A common phone's CSS viewport.
PHONE = {"width": 390, "height": 844}


def _sign_in(browser: Any, base: str, person: Person, viewport: dict[str, int] = LAPTOP) -> Any:
    context = browser.new_context(viewport=viewport)
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.goto(f"{base}/login")
    page.fill("#login-email", person.user.email)
    page.fill("#login-password", person.password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/")
    return page


def _shoot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(path), full_page=False)
    return path


def _save_readme_screenshot(source: Path) -> None:
    """docs/screenshot.png from the generate page, reduced to a palette if it is too big.

    Only with UPDATE_README_SCREENSHOT=1, so a test run leaves the working tree as it was.
    """
    if os.environ.get("UPDATE_README_SCREENSHOT") != "1":
        return
    target = ROOT / "docs" / "screenshot.png"
    target.parent.mkdir(exist_ok=True)
    if source.stat().st_size <= SCREENSHOT_BUDGET:
        shutil.copyfile(source, target)
        return
    from PIL import Image

    with Image.open(source) as picture:
        small = picture.convert("RGB").quantize(colors=128)
        buffer = io.BytesIO()
        small.save(buffer, "PNG", optimize=True)
    target.write_bytes(buffer.getvalue())


def _job_by_prompt(db: Session, prompt: str) -> Job:
    db.expire_all()
    job = db.scalars(select(Job).where(Job.prompt == prompt)).first()
    assert job is not None, prompt
    return job


@pytest.fixture
def pages() -> Iterator[list[Any]]:
    """Pages opened by a test; on failure their screenshots and HTML go to test-artifacts/."""
    opened: list[Any] = []
    yield opened
    for number, page in enumerate(opened):
        if page.is_closed():
            continue
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"last-page-{number}.png"), full_page=True)
        (ARTIFACTS / f"last-page-{number}.html").write_text(page.content())
        page.context.close()


def test_generate_watch_find_reuse_favourite_and_team_wall(
    stack: str, browser: Any, committed_db: Session, pages: list[Any]
) -> None:
    base = stack
    alice = make_person(committed_db)
    mallory = make_person(committed_db)
    committed_db.commit()
    page = _sign_in(browser, base, alice)
    pages.append(page)

    # A field error comes back next to the field, in words, with the typed prompt kept.
    page.check("input[name=model][value=flux-2-pro]")
    page.fill("#prompt", "a test of the size rules")
    page.select_option("#aspect_preset", "custom")
    page.fill("#width", "1000")
    page.click("button[type=submit]")
    page.wait_for_selector("#err-width")
    assert "multiple of 16" in page.inner_text("#err-width")
    assert page.input_value("#prompt") == "a test of the size rules"

    # flux-2-flex: steps and guidance appear (from the catalogue), the estimate follows.
    page.check("input[name=model][value=flux-2-flex]")
    page.wait_for_selector("[data-field=steps]:not([hidden])")
    assert page.is_visible("#guidance")
    page.select_option("#aspect_preset", "1:1")
    page.fill("#steps", "12")
    page.fill("#count", "1")
    expected = credits_text(estimate_cost("flux-2-flex", 1024, 1024).credits)
    page.wait_for_function(
        "t => document.querySelector('#estimate strong').textContent.trim() === t + ' credits'",
        arg=expected,
    )
    flex_prompt = "crimson lighthouse on a basalt cliff"
    page.fill("#prompt", flex_prompt)
    page.press("#prompt", "Control+Enter")
    # The card appears at once and updates itself until the image is there.
    card = page.locator(".job-card", has_text=flex_prompt).first
    card.wait_for()
    page.wait_for_selector(f".job-card[data-status=ready]:has-text('{flex_prompt}') img")

    # flux-2-pro: no steps field.
    page.check("input[name=model][value=flux-2-pro]")
    page.wait_for_selector("[data-field=steps][hidden]", state="attached")
    assert not page.is_visible("#steps")
    pro_prompt = "teal submarine under arctic ice"
    page.fill("#prompt", pro_prompt)
    page.select_option("#aspect_preset", "16:9")
    page.click("button[type=submit]")
    page.wait_for_selector(f".job-card[data-status=ready]:has-text('{pro_prompt}') img")
    shot = _shoot(page, "generate")
    _save_readme_screenshot(shot)

    flex_job = _job_by_prompt(committed_db, flex_prompt)
    pro_job = _job_by_prompt(committed_db, pro_prompt)
    assert (flex_job.status, pro_job.status) == ("ready", "ready")
    assert flex_job.params["steps"] == 12 and "steps" not in pro_job.params

    # The gallery finds the flex job by a word of its prompt.
    page.goto(f"{base}/gallery")
    page.wait_for_selector(f"#tile-{pro_job.id}")
    page.fill("#q", "lighthouse")
    page.click(".filters button[type=submit]")
    page.wait_for_selector(f"#tile-{flex_job.id}")
    assert page.locator(".tile").count() == 1
    _shoot(page, "gallery")

    page.click(f"#tile-{flex_job.id} a")
    page.wait_for_url(f"{base}/gallery/{flex_job.id}")
    page.wait_for_function("() => document.querySelector('.detail-image img').naturalWidth > 0")
    assert flex_prompt in page.inner_text("#prompt-text")
    assert str(flex_job.result_seed or flex_job.seed) in page.inner_text(".facts")
    page.click(f"#fav-{flex_job.id}")
    page.wait_for_selector(f"#fav-{flex_job.id}[aria-pressed=true]")
    _shoot(page, "detail")

    # "Use these settings" fills the generate form with the same model, prompt and seed.
    page.click("text=Use these settings")
    page.wait_for_url(re.compile(r".*/\?from="))
    assert page.input_value("#prompt") == flex_prompt
    assert page.is_checked("input[name=model][value=flux-2-flex]")
    assert page.input_value("#steps") == "12"
    assert page.is_checked("input[name=seed_mode][value=fixed]")

    page.goto(f"{base}/gallery?favourites=1")
    page.wait_for_selector(f"#tile-{flex_job.id}")
    assert page.locator(".tile").count() == 1

    page.goto(f"{base}/prompts")
    page.wait_for_selector(f"text={pro_prompt}")
    assert flex_prompt in page.inner_text(".prompt-table")
    _shoot(page, "prompts")

    # Another team's member sees nothing of it.
    other = _sign_in(browser, base, mallory)
    pages.append(other)
    for path in (f"/gallery/{flex_job.id}", f"/images/{flex_job.id}/original"):
        response = other.goto(f"{base}{path}")
        assert response is not None and response.status == 404, path
    mine = page.goto(f"{base}/images/{flex_job.id}/original")
    assert mine is not None and mine.status == 200
    assert mine.headers["content-type"].startswith("image/")


def test_pages_fit_a_phone(
    stack: str, browser: Any, committed_db: Session, pages: list[Any]
) -> None:
    base = stack
    person = make_person(committed_db)
    committed_db.commit()
    page = _sign_in(browser, base, person, viewport=PHONE)
    pages.append(page)

    prompt = "a paper boat on a rainy street, phone test"
    page.check("input[name=model][value=flux-2-pro]")
    page.fill("#prompt", prompt)
    page.press("#prompt", "Control+Enter")
    page.wait_for_selector(f".job-card[data-status=ready]:has-text('{prompt}') img")

    for path in (
        "/",
        "/gallery",
        f"/gallery/{_job_by_prompt(committed_db, prompt).id}",
        "/prompts",
        "/costs",
        "/account",
    ):
        page.goto(f"{base}{path}")
        overflow = page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 1, f"{path} is {overflow}px wider than a phone screen"
        name = "home" if path == "/" else path.strip("/").split("/")[0]
        if "/gallery/" in path:
            name = "detail"
        page.screenshot(path=str(ARTIFACTS / f"phone-{name}.png"), full_page=False)
