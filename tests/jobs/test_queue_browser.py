"""In a real Chromium, at desktop and phone (390 px) widths: the queue page (positions,
reasons, pause, the team pause), a batch's group with "cancel all" and "retry failed", and a
refused submit that moves focus to the first field at fault and announces the problem."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy.orm import Session

from app.auth.models import Role
from app.embedded import free_port
from app.jobs import messages
from tests.browser import ARTIFACTS, chromium
from tests.factories import PASSWORD, Person, make_person
from tests.pipeline_support import WebProcess, queue_jobs

pytestmark = pytest.mark.browser

WIDTHS = {"desktop": (1280, 900), "phone": (390, 844)}


@pytest.fixture(scope="module")
def web() -> Iterator[str]:
    """One web process for the module (no worker: queued jobs stay queued)."""
    port = free_port()
    with WebProcess(dict(os.environ), port):
        yield f"http://localhost:{port}"


def _page(browser: Any, base: str, person: Person, width: str) -> Any:
    w, h = WIDTHS[width]
    page = browser.new_context(viewport={"width": w, "height": h}).new_page()
    page.goto(f"{base}/login")
    page.fill("#login-email", person.user.email)
    page.fill("#login-password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/")
    return page


def _until(page: Any, expression: str, timeout: float = 5.0) -> None:
    """Poll `expression` in the page (the studio's CSP forbids wait_for_function's eval)."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise AssertionError(f"still false after {timeout} s: {expression}")
        time.sleep(0.05)


#: The first elements reaching past the page's right edge, named, for the failure message.
_WIDER_THAN_THE_PAGE = """
[...document.querySelectorAll('body *')]
  .filter(e => e.getBoundingClientRect().right > document.documentElement.clientWidth + 1)
  .slice(0, 8)
  .map(e => `${e.tagName}.${e.className}#${e.id} ${Math.round(e.getBoundingClientRect().right)}`)
"""


def _no_sideways_scroll(page: Any) -> None:
    overflow = page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    wide = page.evaluate(_WIDER_THAN_THE_PAGE)
    assert overflow <= 0, f"the page scrolls sideways by {overflow} px: {wide}"


@pytest.mark.parametrize("width", sorted(WIDTHS))
def test_queue_page_shows_why_jobs_wait_and_pauses_them(
    web: str, committed_db: Session, width: str
) -> None:
    manager = make_person(committed_db, role=Role.MANAGER)
    member = make_person(committed_db, manager.team)
    committed_db.commit()
    batch = queue_jobs(committed_db, member.user.id, member.team.id, prompt="queued heron", count=3)
    (single,) = queue_jobs(committed_db, manager.user.id, manager.team.id, prompt="solo owl")
    messages.discard_pending(committed_db)
    with chromium() as browser:
        page = _page(browser, web, manager, width)
        try:
            page.click("nav >> text=Queue")
            page.wait_for_url(f"{web}/queue")
            items = page.locator(".queue-item")
            assert items.count() == 4
            reasons = {items.nth(i).get_attribute("data-reason") for i in range(4)}
            assert reasons <= {"starting", "account_cap", "fair_share"}
            assert page.locator(f"#queue-{single.id} .queue-reason").inner_text()
            _no_sideways_scroll(page)

            # Pause one job: it drops to the end with no position and says why.
            page.click(f"#queue-{batch[0].id} >> text=Pause")
            paused = page.locator(f"#queue-{batch[0].id}[data-reason=paused]")
            paused.wait_for(timeout=10_000)
            assert paused.get_attribute("data-position") == ""
            assert "Paused" in paused.inner_text()

            # The whole team's queue.
            page.click("text=Pause the team's queue")
            page.locator("[data-team-paused=true]").wait_for(timeout=10_000)
            page.locator(f"#queue-{single.id}[data-reason=team_paused]").wait_for(timeout=10_000)
            page.click("text=Resume the team's queue")
            page.locator(f"#queue-{single.id}[data-reason=team_paused]").wait_for(
                state="detached", timeout=10_000
            )
            _no_sideways_scroll(page)
        except Exception:
            page.screenshot(path=str(ARTIFACTS / f"queue-page-{width}.png"), full_page=True)
            raise


@pytest.mark.parametrize("width", sorted(WIDTHS))
def test_a_batch_is_one_group_with_cancel_all_and_retry_failed(
    web: str, committed_db: Session, width: str
) -> None:
    person = make_person(committed_db)
    committed_db.commit()
    batch = queue_jobs(committed_db, person.user.id, person.team.id, prompt="four foxes", count=4)
    messages.discard_pending(committed_db)
    with chromium() as browser:
        page = _page(browser, web, person, width)
        try:
            group = page.locator(f"#batch-{batch[0].batch_id}")
            assert group.locator(".job-card").count() == 4
            # The card of a queued job says where it stands and why.
            first = group.locator(f"#job-{batch[0].id} .job-queue")
            assert first.get_attribute("data-reason") in ("starting", "account_cap")
            assert "Position" in first.inner_text()
            box = group.bounding_box()
            assert box is not None and box["width"] <= WIDTHS[width][0]
            _no_sideways_scroll(page)

            group.locator("text=Cancel all").click()
            page.locator(f"#batch-{batch[0].batch_id} .job-card[data-status=cancelled]").nth(
                3
            ).wait_for(timeout=10_000)
            page.locator(f"#batch-{batch[0].batch_id} >> text=Retry failed").click()
            # The retried jobs arrive as one new group of four at the top of the list.
            page.locator("#job-list .batch-group").nth(1).wait_for(timeout=10_000)
            newest = page.locator("#job-list .batch-group").first
            assert newest.locator(".job-card[data-status=queued]").count() == 4
            _no_sideways_scroll(page)
        except Exception:
            page.screenshot(path=str(ARTIFACTS / f"batch-group-{width}.png"), full_page=True)
            raise
    messages.discard_pending(committed_db)


@pytest.mark.parametrize("width", sorted(WIDTHS))
def test_a_refused_submit_focuses_the_first_invalid_field_and_announces_it(
    web: str, committed_db: Session, width: str
) -> None:
    person = make_person(committed_db)
    committed_db.commit()
    with chromium() as browser:
        page = _page(browser, web, person, width)
        try:
            page.fill("#prompt", "a lighthouse at dusk")
            page.select_option("#aspect_preset", "custom")
            page.fill("#width", "100")  # below the catalogue's minimum
            page.fill("#count", "2")
            page.click("#generate-form button[type=submit]")
            page.locator("#form-problems").wait_for(timeout=10_000)
            _until(page, "document.activeElement && document.activeElement.id")
            focused = page.evaluate(
                "({id: document.activeElement.id,"
                " invalid: document.activeElement.getAttribute('aria-invalid'),"
                " described: document.activeElement.getAttribute('aria-describedby')})"
            )
            assert focused["id"] == "width", focused
            assert focused["invalid"] == "true"
            note = page.locator(f"#{focused['described']}").inner_text()
            assert "width" in note.lower() or "at least" in note.lower(), note
            assert page.locator("#form-problems").get_attribute("role") == "alert"
            _until(page, "document.getElementById('form-announcer').textContent.length > 0")
            announced = page.locator("#form-announcer").inner_text()
            assert note.strip() in announced
            assert page.locator("#form-announcer").get_attribute("aria-live") == "assertive"
        except Exception:
            page.screenshot(path=str(ARTIFACTS / f"refused-focus-{width}.png"), full_page=True)
            raise
