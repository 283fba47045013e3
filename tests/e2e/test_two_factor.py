"""Two-factor sign-in in a real Chromium: turn it on from the account page, sign out, and
sign in again with the password and a code from the authenticator."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pyotp
import pytest
from sqlalchemy.orm import Session

from app.embedded import free_port
from app.emulator import EmulatorConfig, EmulatorServer
from tests.browser import ARTIFACTS, chromium
from tests.factories import make_person
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


def test_turn_on_two_factor_then_sign_in_with_password_and_code(
    web: str, committed_db: Session
) -> None:
    person = make_person(committed_db)
    committed_db.commit()
    with chromium() as browser:
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        try:
            page.goto(f"{web}/login")
            page.fill("#login-email", person.user.email)
            page.fill("#login-password", person.password)
            page.click("button[type=submit]")
            page.wait_for_url(f"{web}/")

            page.goto(f"{web}/account")
            page.click("text=Set up two-factor sign-in")
            page.click("button:has-text('Set up two-factor sign-in')")
            page.wait_for_selector(".totp-qr svg")
            assert page.is_visible(".totp-qr svg")
            secret = page.get_attribute("#totp-secret", "data-secret")
            assert secret
            # The key as shown for typing by hand is the same key, in groups of four.
            assert page.inner_text("#totp-secret").replace(" ", "") == secret
            page.screenshot(path=str(ARTIFACTS / "two-factor-setup.png"), full_page=True)
            totp = pyotp.TOTP(secret)
            page.fill("#confirm-code", totp.at(time.time() - 30))
            page.click("button:has-text('Turn on')")
            page.wait_for_selector("#recovery-codes")
            assert len(page.query_selector_all("#recovery-codes li")) == 10
            page.screenshot(path=str(ARTIFACTS / "two-factor-recovery-codes.png"))

            page.goto(f"{web}/account")
            assert "Manage two-factor sign-in" in page.inner_text("main")
            page.click("section:last-of-type button:has-text('Sign out')")
            page.wait_for_url(f"{web}/login")

            page.fill("#login-email", person.user.email)
            page.fill("#login-password", person.password)
            page.click("button[type=submit]")
            page.wait_for_url(f"{web}/login/code?next=/")
            # Half signed in: another page sends the browser back to sign in.
            page.goto(f"{web}/gallery")
            assert page.url.startswith(f"{web}/login")
            page.goto(f"{web}/login/code")
            page.fill("#login-code", totp.now())
            page.click("button:has-text('Continue')")
            page.wait_for_url(f"{web}/")
            page.goto(f"{web}/account")
            assert person.user.email in page.content()
            # The session list names this browser: Chromium on Linux, from this machine.
            row = page.inner_text("tr:has-text('(this browser)')")
            assert "Chrome on Linux" in row and "127.0.0.1" in row
            page.screenshot(path=str(ARTIFACTS / "two-factor-account.png"), full_page=True)
        except Exception:
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "two-factor-failure.png"), full_page=True)
            (ARTIFACTS / "two-factor-failure.html").write_text(page.content())
            raise
        finally:
            context.close()
