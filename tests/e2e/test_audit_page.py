"""The audit log in a real Chromium: a manager's budget change shows on /audit, filters and the
CSV export work, and a member is refused the page."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

import pytest
from sqlalchemy.orm import Session

from app.auth.models import Role
from app.embedded import free_port
from app.emulator import EmulatorConfig, EmulatorServer
from tests.browser import ARTIFACTS, chromium
from tests.factories import Person, make_person, make_team
from tests.pipeline_support import WebProcess, pipeline_env

pytestmark = [pytest.mark.browser, pytest.mark.slow]

WAIT_MS = 30_000


@pytest.fixture(scope="module")
def web() -> Iterator[str]:
    """The web server alone (no worker: nothing here generates images)."""
    with (
        EmulatorServer(EmulatorConfig()) as emulator,
        WebProcess(pipeline_env(emulator), free_port()) as server,
    ):
        # localhost is a secure context, so the __Host- Secure cookie works over http.
        yield f"http://localhost:{server.port}"


def _sign_in(browser: object, web: str, person: Person):  # type: ignore[no-untyped-def]
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)  # type: ignore[attr-defined]
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.goto(f"{web}/login")
    page.fill("#login-email", person.user.email)
    page.fill("#login-password", person.password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{web}/")
    return page


def test_a_manager_reads_and_exports_the_log_and_a_member_is_refused(
    web: str, committed_db: Session
) -> None:
    team = make_team(committed_db, "Audit Browser Team")
    manager = make_person(committed_db, team, Role.MANAGER)
    member = make_person(committed_db, team)
    committed_db.commit()
    with chromium() as browser:
        page = _sign_in(browser, web, manager)
        try:
            page.goto(f"{web}/costs")
            page.select_option("select[name=user_id]", str(member.user.id))
            page.fill("input[name=monthly_credits]", "250")
            page.click("button:has-text('Save budget')")
            page.wait_for_url("**/costs?saved=1*")

            page.click("nav a[href='/audit']")
            page.wait_for_url(f"{web}/audit")
            row = page.locator("tr.audit-row").first
            assert "budget.set" in row.inner_text()
            assert manager.user.email in row.inner_text()
            assert "monthly_credits: 250" in row.inner_text()
            page.screenshot(path=str(ARTIFACTS / "audit-page.png"), full_page=True)

            page.select_option("select[name=action]", "budget.set")
            page.click("button:has-text('Filter')")
            page.wait_for_url("**/audit?*action=budget.set*")
            assert page.locator("tr.audit-row").count() == 1

            with page.expect_download() as download_info:
                page.click("text=Export CSV")
            path = download_info.value.path()
            with open(path, encoding="utf-8") as exported:
                rows = list(csv.DictReader(io.StringIO(exported.read())))
            assert [r["action"] for r in rows] == ["budget.set"]
            assert rows[0]["actor_email"] == manager.user.email
        finally:
            page.context.close()

        page = _sign_in(browser, web, member)
        try:
            assert page.locator("nav a[href='/audit']").count() == 0
            answer = page.goto(f"{web}/audit")
            assert answer is not None and answer.status == 403
            assert "manager" in page.inner_text("body").lower()
        finally:
            page.context.close()
