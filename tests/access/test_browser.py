"""Access and approvals in a real Chromium against a real web server, Celery worker and emulator:
a manager restricts members and sets a quota; a member sees the model disabled with its reason,
asks for approval of a refused request, and sees it approved and the image made."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.access.models import ApprovalRequest
from app.auth.models import Role
from app.emulator import EmulatorConfig, EmulatorServer
from app.jobs.models import Job
from tests.browser import ARTIFACTS, chromium
from tests.factories import Person, make_person, make_team
from tests.pipeline_support import WebProcess, WorkerProcess, pipeline_env

pytestmark = [pytest.mark.browser, pytest.mark.pipeline, pytest.mark.slow]

WAIT_MS = 45_000


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


@pytest.fixture
def pages() -> Iterator[list[Any]]:
    opened: list[Any] = []
    yield opened
    for number, page in enumerate(opened):
        if page.is_closed():
            continue
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"access-page-{number}.png"), full_page=True)
        (ARTIFACTS / f"access-page-{number}.html").write_text(page.content())
        page.context.close()


def _sign_in(browser: Any, base: str, person: Person) -> Any:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.goto(f"{base}/login")
    page.fill("#login-email", person.user.email)
    page.fill("#login-password", person.password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/")
    return page


def test_a_manager_restricts_and_approves_and_the_member_gets_the_image(
    stack: str, committed_db: Session, pages: list[Any]
) -> None:
    base = stack
    team = make_team(committed_db, "Approval Studio")
    manager = make_person(committed_db, team, Role.MANAGER)
    member = make_person(committed_db, team, Role.MEMBER)
    committed_db.commit()
    with chromium() as browser:
        boss = _sign_in(browser, base, manager)
        pages.append(boss)
        # flux-2-max for managers only, and a one-credit monthly quota for the member.
        boss.goto(f"{base}/access")
        boss.select_option("#rule-subject", "role:member")
        boss.check("#restrict-models")
        boss.check("[data-allowed-model=flux-2-pro]")
        boss.check("[data-allowed-model=flux-2-flex]")
        boss.click("#rule-form button[type=submit]")
        boss.wait_for_selector("#access-saved")
        assert "flux-2-flex, flux-2-pro" in boss.inner_text("#access-rules")
        boss.select_option("#quota-form select[name=user_id]", str(member.user.id))
        boss.fill("#quota-form input[name=monthly_credits]", "1")
        boss.click("#quota-form button[type=submit]")
        boss.wait_for_selector(f"[data-quota='{member.user.id}']")

        worker = _sign_in(browser, base, member)
        pages.append(worker)
        max_radio = worker.locator("input[name=model][value=flux-2-max]")
        assert max_radio.is_disabled()
        reason = worker.inner_text("#why-flux-2-max")
        assert reason.startswith("flux-2-max is limited to managers in this team")
        assert worker.is_enabled("input[name=model][value=flux-2-pro]")

        prompt = "a saffron kite over salt flats"
        worker.check("input[name=model][value=flux-2-pro]")
        worker.fill("#prompt", prompt)
        worker.select_option("#aspect_preset", "1:1")
        worker.click("button[type=submit]")
        worker.wait_for_selector("#form-problems")
        assert "Your budget has 1.00 of 1.00 credits left this month" in worker.inner_text(
            "#form-problems"
        )
        worker.click("[data-ask-approval]")
        worker.wait_for_url(f"{base}/approvals?asked=*")
        worker.wait_for_selector("#approval-asked")

        committed_db.expire_all()
        request = committed_db.scalars(
            select(ApprovalRequest).where(ApprovalRequest.user_id == member.user.id)
        ).one()
        assert request.status == "pending" and request.refused_code == "budget_exceeded"
        assert request.params["prompt"] == prompt

        boss.goto(f"{base}/approvals")
        card = boss.locator(f"[data-approval='{request.id}']")
        assert prompt in card.inner_text()
        assert "Your budget has 1.00 of 1.00 credits left this month" in card.inner_text()
        card.locator("input[name=note]").fill("go ahead this once")
        card.locator("[data-approve]").click()
        boss.wait_for_selector(f"#decided-approvals [data-approval='{request.id}']")

        worker.goto(f"{base}/")
        worker.wait_for_selector(
            f"#my-approvals [data-approval='{request.id}'][data-status=approved]"
        )
        assert "go ahead this once" in worker.inner_text("#my-approvals")
        worker.wait_for_selector(f".job-card[data-status=ready]:has-text('{prompt}') img")

    committed_db.expire_all()
    jobs = committed_db.scalars(select(Job).where(Job.user_id == member.user.id)).all()
    assert [(j.status, j.prompt) for j in jobs] == [("ready", prompt)]
    assert jobs[0].cost_credits is not None
