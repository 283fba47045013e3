"""The live estimate in a real Chromium: it follows reference images and size presets at once."""

from __future__ import annotations

import io
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.bfl.catalogue import estimate_cost
from app.emulator import EmulatorConfig, EmulatorServer
from app.jobs.models import Job
from app.units import credits_text
from tests.browser import ARTIFACTS, chromium
from tests.factories import Person, make_person
from tests.pipeline_support import WebProcess, pipeline_env

pytestmark = [pytest.mark.browser, pytest.mark.slow]

WAIT_MS = 20_000
#: 1.43 MP: BFL bills it as two input megapixels.
REFERENCE_SIZE = (1500, 1000)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def web() -> Iterator[str]:
    """The web server alone: the estimate and the form need no worker."""
    with (
        EmulatorServer(EmulatorConfig()) as emulator,
        WebProcess(pipeline_env(emulator), _free_port()) as process,
    ):
        # localhost: a secure context, so the __Host- session cookie works over http.
        yield f"http://localhost:{process.port}"


@pytest.fixture
def page(web: str, committed_db: Session) -> Iterator[Any]:
    person: Person = make_person(committed_db)
    committed_db.commit()
    with chromium() as browser:
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        opened = context.new_page()
        opened.set_default_timeout(WAIT_MS)
        opened.goto(f"{web}/login")
        opened.fill("#login-email", person.user.email)
        opened.fill("#login-password", person.password)
        opened.click("button[type=submit]")
        opened.wait_for_url(f"{web}/")
        try:
            yield opened
        except BaseException:
            ARTIFACTS.mkdir(exist_ok=True)
            opened.screenshot(path=str(ARTIFACTS / "estimate-failure.png"), full_page=True)
            raise


def _pictures(tmp_path: Path, count: int) -> list[str]:
    paths = []
    for i in range(count):
        path = tmp_path / f"reference-{i}.png"
        buffer = io.BytesIO()
        Image.new("RGB", REFERENCE_SIZE, (40 * i, 120, 200)).save(buffer, "PNG")
        path.write_bytes(buffer.getvalue())
        paths.append(str(path))
    return paths


def _wait_for_estimate(page: Any, credits: str) -> None:
    page.wait_for_function(
        "t => document.querySelector('#estimate strong').textContent.trim() === t + ' credits'",
        arg=credits,
    )


def test_reference_images_count_in_the_estimate_at_once(page: Any, tmp_path: Path) -> None:
    page.check("input[name=model][value=flux-2-pro]")
    page.select_option("#aspect_preset", "1:1")
    _wait_for_estimate(page, credits_text(estimate_cost("flux-2-pro", 1024, 1024).credits))
    # Two references and nothing else changed: BFL charges each by its megapixels (2 each).
    page.set_input_files("#reference_images", _pictures(tmp_path, 2))
    two = estimate_cost("flux-2-pro", 1024, 1024, reference_sizes=[REFERENCE_SIZE] * 2)
    assert credits_text(two.credits) == "9"  # 3 + 1.5 x 4 input megapixels
    _wait_for_estimate(page, "9")
    assert "2 reference images" in page.inner_text("#estimate")
    page.click("[data-reference-item]:nth-child(2) [data-remove-reference]")
    one = estimate_cost("flux-2-pro", 1024, 1024, reference_sizes=[REFERENCE_SIZE])
    _wait_for_estimate(page, credits_text(one.credits))


def test_choosing_a_preset_prices_the_size_it_sets(page: Any) -> None:
    page.check("input[name=model][value=flux-2-flex]")
    page.wait_for_selector("[data-field=steps]:not([hidden])")
    page.select_option("#aspect_preset", "custom")
    page.fill("#width", "2048")
    page.fill("#height", "2048")
    page.dispatch_event("#height", "change")
    _wait_for_estimate(page, credits_text(estimate_cost("flux-2-flex", 2048, 2048).credits))
    page.select_option("#aspect_preset", "1:1")
    assert (page.input_value("#width"), page.input_value("#height")) == ("1024", "1024")
    _wait_for_estimate(page, credits_text(estimate_cost("flux-2-flex", 1024, 1024).credits))


def test_unticking_upsampling_sends_false(page: Any, committed_db: Session) -> None:
    page.check("input[name=model][value=flux-2-flex]")
    box = page.locator("#prompt_upsampling")
    box.wait_for(state="visible")
    assert box.is_checked()  # BFL's default for flex
    box.uncheck()
    prompt = "an unembellished paper lantern"
    page.fill("#prompt", prompt)
    page.click("button[type=submit]")
    page.wait_for_selector(f".job-card:has-text('{prompt}')")
    committed_db.expire_all()
    job = committed_db.scalars(select(Job).where(Job.prompt == prompt)).one()
    assert job.params["prompt_upsampling"] is False
