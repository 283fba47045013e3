"""Browser security headers on every response, /docs from the studio's own files, and the main
pages running in Chromium under the Content-Security-Policy without a single violation."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app.auth.models import Role
from app.embedded import free_port
from app.jobs.models import JobStatus
from app.main import create_app
from app.settings import get_settings
from tests.browser import ARTIFACTS, ROOT, chromium
from tests.costs.factories import make_charge, make_job
from tests.factories import PASSWORD, make_person

EXPECTED = {
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
}


@pytest.fixture
def client() -> Iterator[TestClient]:
    with TestClient(create_app(), base_url="https://testserver") as client:
        yield client


def _check(response: httpx.Response) -> None:
    for name, value in EXPECTED.items():
        assert response.headers.get(name) == value, (response.url, name)
    csp = response.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
    policy = response.headers["permissions-policy"]
    for feature in ("camera=()", "microphone=()", "geolocation=()"):
        assert feature in policy


@pytest.mark.parametrize(
    "path", ["/login", "/healthz", "/openapi.json", "/docs", "/static/css/studio.css", "/nowhere"]
)
def test_every_response_carries_the_headers(client: TestClient, path: str) -> None:
    _check(client.get(path))


def test_hsts_only_when_the_public_url_is_https(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert "strict-transport-security" not in client.get("/login").headers
    monkeypatch.setenv("PUBLIC_URL", "https://studio.example.com")
    get_settings.cache_clear()
    try:
        assert client.get("/login").headers["strict-transport-security"] == "max-age=31536000"
        monkeypatch.setenv("PUBLIC_URL", "http://studio.internal:8000")
        get_settings.cache_clear()
        assert "strict-transport-security" not in client.get("/login").headers
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()


def test_docs_load_only_the_studios_own_files(client: TestClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert sources and all(s.startswith("/static/") for s in sources), sources
    assert "<script>" not in page.text  # no inline script: the CSP would block it
    assert "/static/vendor/swagger-ui-bundle.js" in sources
    assert client.get("/redoc").status_code == 404
    assert client.get("/static/js/swagger-init.js").status_code == 200


def test_templates_hold_no_inline_script_handler_or_style() -> None:
    found = []
    for path in (ROOT / "templates").rglob("*.html"):
        text = path.read_text()
        for pattern in (r"<style", r"\sstyle=", r"\son[a-z]+=", r"hx-on", r"javascript:"):
            if re.search(pattern, text):
                found.append(f"{path.relative_to(ROOT)}: {pattern}")
        for tag in re.findall(r"<script[^>]*>", text):
            if "src=" not in tag and 'type="application/json"' not in tag:
                found.append(f"{path.relative_to(ROOT)}: {tag}")
    assert found == []


# --- In Chromium ----------------------------------------------------------------------------


@pytest.fixture
def web() -> Iterator[str]:
    """The studio's web process on a free port, with this test run's settings."""
    port = free_port()
    env = dict(os.environ, PUBLIC_URL=f"http://localhost:{port}")
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1",
         "--port", str(port), "--log-level", "warning"],
        cwd=ROOT,
        env=env,
    )  # fmt: skip
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


#: Records violations the page reports; init scripts are not subject to the page's CSP.
_LISTEN = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", function (e) {
  window.__csp.push(e.violatedDirective + " " + (e.blockedURI || "inline") + " " + e.sourceFile);
});
"""


@pytest.mark.browser
def test_main_pages_run_under_the_csp_in_chromium(committed_db: Session, web: str) -> None:
    from playwright.sync_api import Page, expect

    admin = make_person(committed_db, role=Role.ADMIN)
    ready = make_charge(committed_db, admin, "3", prompt="a ready one for the gallery")
    waiting = make_job(committed_db, admin, prompt="a queued one", status=JobStatus.QUEUED)
    committed_db.commit()

    with chromium() as browser:
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.add_init_script(_LISTEN)
        page: Page = context.new_page()
        console: list[str] = []
        errors: list[str] = []
        page.on("console", lambda m: console.append(m.text))
        page.on("pageerror", lambda exc: errors.append(str(exc)))

        page.goto(f"{web}/login")
        page.fill("#login-email", admin.user.email)
        page.fill("#login-password", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(f"{web}/")

        def visit(path: str, ready: Callable[[], None]) -> None:
            page.goto(f"{web}{path}")
            ready()
            page.wait_for_timeout(300)
            seen = page.evaluate("window.__csp")
            assert seen == [], f"{path}: {seen}"

        # Generate: the form follows the catalogue, the queued card polls (htmx swaps) and its
        # placeholder is sized from data-aspect.
        def generate_ready() -> None:
            expect(page.locator("#generate-form")).to_be_visible()
            placeholder = page.locator(f"#job-{waiting.id} .thumb-placeholder")
            expect(placeholder).to_have_css("aspect-ratio", "1024 / 1024")
            page.wait_for_timeout(1500)  # at least one htmx poll of the card

        visit("/", generate_ready)
        visit("/gallery", lambda: expect(page.locator("h1")).to_be_visible())
        visit(f"/gallery/{ready.id}", lambda: expect(page.locator("h1")).to_be_visible())
        visit("/prompts", lambda: expect(page.locator("h1")).to_be_visible())
        visit(
            "/costs", lambda: expect(page.locator("canvas[data-drawn=true]").first).to_be_visible()
        )
        visit("/account", lambda: expect(page.locator("h1")).to_be_visible())
        visit("/account/tokens", lambda: expect(page.locator("h1")).to_be_visible())

        def ops_ready() -> None:
            meter = page.locator(".ops-meter > span").first
            expect(meter).to_have_attribute("data-percent", re.compile(r"\d"))
            assert (
                page.evaluate("getComputedStyle(document.querySelector('.ops-grid')).display")
                == "grid"
            )

        visit("/ops", ops_ready)

        def team_ready() -> None:
            page.click("form[action='/team/invites'] button[type=submit]")
            link = page.locator("#invite-link")
            expect(link).to_be_visible()
            link.focus()
            whole = page.evaluate(
                "(n => n.selectionStart === 0 && n.selectionEnd === n.value.length)"
                "(document.getElementById('invite-link'))"
            )
            assert whole, "the invite link is not selected on focus"

        visit("/team", team_ready)

        def docs_ready() -> None:
            expect(page.locator(".opblock").first).to_be_visible(timeout=20000)

        visit("/docs", docs_ready)
        page.screenshot(path=str(ARTIFACTS / "docs.png"))
        context.close()

    refused = [line for line in console if "Content Security Policy" in line]
    assert refused == []
    assert errors == []
