"""In a real Chromium: an upload the studio refuses (413) is explained, not silently dropped."""

from __future__ import annotations

import os

import pytest
from sqlalchemy.orm import Session

from app.embedded import free_port
from tests.browser import ARTIFACTS, chromium
from tests.factories import PASSWORD, make_person
from tests.pipeline_support import WebProcess

pytestmark = pytest.mark.browser


def test_an_upload_over_the_limit_shows_the_limit_instead_of_nothing(
    committed_db: Session,
) -> None:
    person = make_person(committed_db, email="uma@example.com")
    committed_db.commit()
    port = free_port()
    # A small job-request limit, so an ordinary picture crosses it.
    env = dict(os.environ, MAX_JOB_REQUEST_BYTES="65536")
    with WebProcess(env, port), chromium() as browser:
        base = f"http://localhost:{port}"
        page = browser.new_context().new_page()
        try:
            page.goto(f"{base}/login")
            page.fill("#login-email", person.user.email)
            page.fill("#login-password", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_url(f"{base}/")
            page.fill("#prompt", "a lighthouse at dusk")
            page.set_input_files(
                "#reference_images",
                files=[{"name": "big.png", "mimeType": "image/png", "buffer": b"\0" * 200_000}],
            )
            # The form sends each picked file on its own to /references at once: the
            # refusal shows under the picker, with the limit and the setting that sets it.
            notice = page.locator("[data-reference-warning]")
            notice.wait_for(state="visible", timeout=15_000)
            text = notice.inner_text()
            assert page.locator("[data-reference-item]").count() == 0
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "refusal-notice.png"))
            raise
    assert "64 KiB" in text and "MAX_JOB_REQUEST_BYTES" in text
