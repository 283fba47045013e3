"""Signing in from TestClient-based tests, through the real login form."""

from __future__ import annotations

import html
import re

from fastapi.testclient import TestClient

_CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')
_ERROR = re.compile(r'class="auth-error"[^>]*>([^<]*)<')


def csrf_from(page: str) -> str:
    """The anti-forgery token of the first form on a page."""
    found = _CSRF_FIELD.search(page)
    assert found, "the page has no csrf_token field"
    return html.unescape(found.group(1))


def login(client: TestClient, email: str, password: str) -> None:
    """Sign `client` in as a browser would: load /login, post the form with its token.

    The client must use base_url="https://testserver" so the Secure session cookie is sent back.
    """
    page = client.get("/login")
    assert page.status_code == 200, f"GET /login answered {page.status_code}"
    response = client.post(
        "/login",
        data={"email": email, "password": password, "csrf_token": csrf_from(page.text)},
        follow_redirects=False,
    )
    if response.status_code != 303:
        problem = _ERROR.search(response.text)
        raise AssertionError(
            f"sign-in as {email} failed with {response.status_code}: "
            f"{html.unescape(problem.group(1)) if problem else response.text[:200]}"
        )


def logout(client: TestClient) -> None:
    page = client.get("/account")
    client.post("/logout", data={"csrf_token": csrf_from(page.text)}, follow_redirects=False)
