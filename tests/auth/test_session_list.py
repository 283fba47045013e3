"""People see where they are signed in (when, from which address and browser) and end
those sessions one by one or all at once."""

from __future__ import annotations

import re
from collections.abc import Callable

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app.auth.service import describe_user_agent
from tests.auth.support import csrf_from, login
from tests.factories import PASSWORD, make_person

FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0"
CHROME_ON_MAC = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/141.0.0.0 Safari/537.36"
)
_ROW = re.compile(r'<tr id="session-([0-9a-f-]{36})">(.*?)</tr>', re.S)


def _rows(page: str) -> dict[str, str]:
    return {sid: row for sid, row in _ROW.findall(page)}


def test_the_list_shows_each_session_with_address_browser_and_times(
    db: Session, client_factory: Callable[..., TestClient]
) -> None:
    person = make_person(db)
    laptop = client_factory("198.51.100.201")
    laptop.headers["user-agent"] = FIREFOX
    phone = client_factory("203.0.113.44")
    phone.headers["user-agent"] = CHROME_ON_MAC
    login(laptop, person.user.email, PASSWORD)
    login(phone, person.user.email, PASSWORD)
    rows = _rows(laptop.get("/account").text)
    assert len(rows) == 2
    mine = next(row for row in rows.values() if "(this browser)" in row)
    other = next(row for row in rows.values() if "(this browser)" not in row)
    assert "198.51.100.201" in mine and "Firefox on Linux" in mine
    assert "203.0.113.44" in other and "Chrome on macOS" in other
    # Created and last-seen times, to the minute.
    assert len(re.findall(r"\d{4}-\d\d-\d\d \d\d:\d\d", other)) == 2


def test_ending_another_session_signs_that_browser_out_at_once(
    db: Session, client_factory: Callable[..., TestClient]
) -> None:
    person = make_person(db)
    mine, theirs, third = client_factory(), client_factory(), client_factory()
    for client in (mine, theirs, third):
        login(client, person.user.email, PASSWORD)
    page = theirs.get("/account").text
    their_id = next(sid for sid, row in _rows(page).items() if "(this browser)" in row)
    token = csrf_from(mine.get("/account").text)
    path = f"/account/sessions/{their_id}/end"
    # Only with the password typed again (a borrowed session cannot sign the owner out).
    refused = mine.post(path, data={"csrf_token": token}, follow_redirects=False)
    assert refused.status_code == 400
    assert theirs.get("/account").status_code == 200
    ended = mine.post(
        path, data={"csrf_token": token, "current_password": PASSWORD}, follow_redirects=False
    )
    assert ended.status_code == 303
    # That cookie is worthless now: pages send it to sign in, the API answers 401.
    gone = theirs.get("/account", follow_redirects=False)
    assert gone.status_code == 303 and gone.headers["location"].startswith("/login")
    assert theirs.get("/api/v1/me").status_code == 401
    assert third.get("/account").status_code == 200
    assert their_id not in mine.get("/account").text

    # "End all others" leaves only this browser.
    everyone = mine.post(
        "/account/sessions/end-others",
        data={"csrf_token": csrf_from(mine.get("/account").text), "current_password": PASSWORD},
        follow_redirects=False,
    )
    assert everyone.status_code == 303
    assert third.get("/api/v1/me").status_code == 401
    assert len(_rows(mine.get("/account").text)) == 1
    # Ending this very session is signing out, and needs no password.
    own_id = next(iter(_rows(mine.get("/account").text)))
    out = mine.post(
        f"/account/sessions/{own_id}/end",
        data={"csrf_token": csrf_from(mine.get("/account").text)},
        follow_redirects=False,
    )
    assert out.headers["location"] == "/login"
    assert mine.get("/api/v1/me").status_code == 401


def test_user_agent_summaries() -> None:
    assert describe_user_agent(FIREFOX) == "Firefox on Linux"
    assert describe_user_agent(CHROME_ON_MAC) == "Chrome on macOS"
    edge = CHROME_ON_MAC.replace("Macintosh; Intel Mac OS X 10_15_7", "Windows NT 10.0")
    assert describe_user_agent(edge + " Edg/141.0") == "Edge on Windows"
    assert describe_user_agent(None) == "Unknown browser"
    assert describe_user_agent("curl/8.5.0") == "curl"
