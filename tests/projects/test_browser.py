"""Projects in a real Chromium: a manager keeps the list, budgets a project and reviews costs;
a member picks a project on the generate page and sees only their own review."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.auth.models import Role
from app.projects.models import Project
from tests.browser import ARTIFACTS, chromium
from tests.costs.factories import make_charge
from tests.costs.test_browser import web
from tests.factories import PASSWORD, make_person, make_team

pytestmark = pytest.mark.browser
__all__ = ["web"]


def _sign_in(page: object, base: str, email: str, then: str) -> None:
    from playwright.sync_api import Page

    assert isinstance(page, Page)
    page.goto(f"{base}/login?next={then}")
    page.fill("#login-email", email)
    page.fill("#login-password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}{then}")


def test_projects_as_a_manager_and_as_a_member(committed_db: Session, web: str) -> None:
    from playwright.sync_api import expect

    team = make_team(committed_db, "Poster Studio")
    manager = make_person(committed_db, team, Role.MANAGER, email="maria@example.com")
    member = make_person(committed_db, team, email="milo@example.com")
    make_charge(committed_db, member, "6")
    committed_db.commit()
    with chromium() as browser:
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        _sign_in(page, web, manager.user.email, "/projects")
        expect(page.locator("nav")).to_contain_text("Projects")
        page.fill("#new-project", "Client A")
        page.click("form.project-create button[type=submit]")
        expect(page.locator("#projects-saved")).to_be_visible()
        expect(page.locator(".projects-table")).to_contain_text("Client A")
        page.fill("#new-project", "client a")
        page.click("form.project-create button[type=submit]")
        expect(page.locator("#projects-error")).to_contain_text("already has a project named")
        project = committed_db.scalar(select(Project).where(Project.name == "Client A"))
        assert project is not None

        page.goto(f"{web}/costs")
        page.select_option("select[name=project_id]", str(project.id))
        page.fill("input[name=monthly_credits]", "500")
        page.click("form.budget-form button[type=submit]")
        expect(page.locator("#budgets")).to_contain_text("Project Client A")
        expect(page.locator("#table-by-project")).to_contain_text("General")
        page.goto(f"{web}/costs/review")
        expect(page.locator("#table-forecast")).to_contain_text("Whole team")
        expect(page.locator("#table-forecast")).to_contain_text("Project Client A")
        page.screenshot(path=str(ARTIFACTS / "projects-manager.png"), full_page=True)
        assert errors == []
        context.close()

        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        _sign_in(page, web, member.user.email, "/")
        chooser = page.locator("#project_id")
        expect(chooser.locator("option")).to_have_count(2)
        chooser.select_option(label="Client A")
        expect(page.locator("nav")).not_to_contain_text("Projects")
        page.goto(f"{web}/costs/review")
        expect(page.locator("h1")).to_contain_text("your own spend")
        expect(page.locator("#review-total")).to_contain_text("6.00")
        response = page.goto(f"{web}/projects")
        assert response is not None and response.status == 403
        page.screenshot(path=str(ARTIFACTS / "projects-member.png"), full_page=True)
        context.close()
