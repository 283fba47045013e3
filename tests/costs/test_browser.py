"""The cost pages in a real Chromium: a manager's dashboard with charts, a member's own spend."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal

import httpx
import pytest
from sqlalchemy.orm import Session

from app.auth.models import Role
from app.costs.models import CreditBalance
from app.db import utcnow
from app.embedded import free_port
from app.jobs.models import JobStatus
from tests.browser import ARTIFACTS, ROOT, chromium
from tests.costs.factories import make_budget, make_charge
from tests.factories import PASSWORD, Person, make_person, make_team

pytestmark = pytest.mark.browser


@pytest.fixture
def web() -> Iterator[str]:
    """The studio's web process on a free port, with this test run's settings."""
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "app.main:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=dict(os.environ),
    )
    base = f"http://localhost:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the web process did not start")
            time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _seed(db: Session) -> tuple[Person, Person, Person]:
    team = make_team(db, "Poster Studio")
    manager = make_person(db, team, Role.MANAGER, email="maria@example.com")
    member = make_person(db, team, email="milo@example.com")
    colleague = make_person(db, team, email="cora@example.com")
    outsider = make_person(db, make_team(db, "Other Studio"), email="otto@example.com")
    now = utcnow()
    start = now.replace(day=1, hour=12, minute=0, second=0, microsecond=0)
    days = max(1, (now - start).days + 1)
    for i in range(12):
        at = start + timedelta(days=i % days)
        at = min(at, now)
        make_charge(db, member, "3", at=at, prompt=f"milo: ferry at dawn, variant {i % 4}")
    make_charge(db, member, "6", model="flux-2-flex", prompt="milo: menu typography")
    make_charge(db, member, "3", prompt="milo: blocked", status=JobStatus.MODERATED)
    make_charge(db, colleague, "9", model="flux-2-flex", prompt="cora: shop front signage")
    make_charge(db, colleague, "3", prompt="cora: failed render", status=JobStatus.FAILED)
    make_charge(db, manager, "4.5", model="flux-2-max", prompt="maria: campaign key visual")
    make_charge(db, outsider, "99", prompt="OTHER-TEAM-PROMPT")
    make_budget(db, member, "50", personal=True)  # 45 of 50 used: the 80% warning shows
    make_budget(db, manager, "400", personal=False)
    db.add(CreditBalance(credits=Decimal("2750"), checked_at=now))
    db.commit()
    return manager, member, colleague


def _sign_in(page: object, base: str, email: str) -> None:
    from playwright.sync_api import Page

    assert isinstance(page, Page)
    page.goto(f"{base}/login?next=/costs")
    page.fill("#login-email", email)
    page.fill("#login-password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/costs")


def test_cost_pages_in_a_browser(committed_db: Session, web: str) -> None:
    from playwright.sync_api import expect

    manager, member, colleague = _seed(committed_db)
    with chromium() as browser:
        # A manager: the team's dashboard, charts drawn, tables with the same figures.
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        _sign_in(page, web, manager.user.email)
        expect(page.locator("h1")).to_contain_text("Costs of Poster Studio")
        expect(page.locator("canvas[data-drawn=true]")).to_have_count(3)
        people = page.locator("#table-by-person tbody tr")
        expect(people).to_have_count(3)
        expect(people.first).to_contain_text(member.user.name)
        expect(people.first).to_contain_text("45.00")
        expect(page.locator("#table-by-model")).to_contain_text("flux-2-max")
        expect(page.locator("#credit-balance")).to_contain_text("2,750.00")
        expect(page.locator("#lost-card")).to_contain_text("6.00")
        expect(page.locator("#table-prompts")).to_contain_text("milo: ferry at dawn")
        expect(page.locator("body")).not_to_contain_text("OTHER-TEAM-PROMPT")
        expect(page.locator(".budget-meter.budget-warning")).to_contain_text(member.user.name)
        page.screenshot(path=str(ARTIFACTS / "costs.png"), full_page=True)

        # Setting a budget with the form.
        page.select_option("select[name=user_id] >> nth=0", str(colleague.user.id))
        page.fill("input[name=monthly_credits]", "120")
        page.click("form.budget-form button[type=submit]")
        expect(page.locator("#budgets .notice")).to_contain_text("Budget saved")
        expect(page.locator("#budgets")).to_contain_text(colleague.user.name)
        assert errors == []
        context.close()

        # A member: only their own figures, and the 80% warning.
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        _sign_in(page, web, member.user.email)
        expect(page.locator("h1")).to_contain_text("My spend")
        expect(page.locator("#spend-warning")).to_contain_text("90.0%")
        expect(page.locator("#remaining")).to_have_text("5.00")
        expect(page.locator("canvas[data-drawn=true]")).to_have_count(2)
        expect(page.locator("body")).not_to_contain_text(colleague.user.name)
        expect(page.locator("body")).not_to_contain_text("cora: shop front signage")
        expect(page.locator("body")).not_to_contain_text("Monthly budgets")
        page.screenshot(path=str(ARTIFACTS / "costs-member.png"), full_page=True)
        context.close()
