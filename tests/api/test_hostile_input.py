"""Hostile input on every route: NUL characters are a 422, giant numbers never a 500.

The routes are read from the app itself, so a route added later is swept too.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.auth.models import Role, User
from app.jobs.models import Job
from app.main import create_app
from app.settings import get_settings
from tests.api.conftest import Caller, MakeCaller, make_ready_job, sign_in
from tests.route_map import RouteCall, route_calls

NUL_QUERY = (
    "q=%00&model=%00&user=%00&user_id=%00&status=%00&from=%00&to=%00&after=%00&cursor=%00"
    "&offset=%00&prompt=%00&period=%00&start=%00&end=%00&view=%00&width=%00"
)
GIANT = str(10**30)
LONG_DIGITS = "9" * 5000
BAD_CURSOR = "9" * 20 + "." + "a" * 32
#: One hostile value per request, so an early refusal of one cannot hide another's 500.
HOSTILE_PARAMS: list[tuple[str, str]] = [
    ("offset", GIANT),
    ("offset", LONG_DIGITS),
    ("offset", "-" + GIANT),
    ("limit", GIANT),
    ("after", BAD_CURSOR),
    ("cursor", BAD_CURSOR),
    ("cursor", "p" + "9" * 30),
    ("width", LONG_DIGITS),
    ("width", str(10**200)),
    ("height", GIANT),
    ("reference_count", GIANT),
    ("count", GIANT),
    ("seed", LONG_DIGITS),
    ("from", "99999-99-99"),
    ("to", "0000-00-00"),
    ("start", "99999-01-01"),
    ("end", "9999-12-31"),
    ("user", "not-a-uuid"),
    ("user_id", "not-a-uuid"),
    ("user", str(uuid.uuid4())),
    ("period", "forever"),
    ("status", "nonsense"),
    ("q", "x" * 20_000),
    ("q", "\u202e\ud7ff emoji \U0001f600 ' \" <script>"),
    ("prompt", "x" * 20_000),
    ("model", "m" * 5000),
    ("favourites", GIANT),
]


@dataclass
class Sweep:
    browser: TestClient
    api: TestClient
    caller: Caller
    ready_id: uuid.UUID

    def send(self, call: RouteCall, query: str) -> tuple[str, object]:
        path = call.fill(
            {
                "job_id": str(self.ready_id),
                "token": "x" * 20,
                "token_id": str(uuid.uuid4()),
                "sha256": "0" * 64,
                "approval_id": str(uuid.uuid4()),
                "batch_id": str(uuid.uuid4()),
            }
        )
        url = f"{path}?{query}"
        if call.is_api:
            return url, self.api.request(call.method, url, headers=self.caller.headers)
        return url, self.browser.request(call.method, url)


@pytest.fixture
def no_rate_limit(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The sweep sends hundreds of API requests: a 429 would hide what a route really does."""
    monkeypatch.setenv("API_RATE_LIMIT_PER_MINUTE", "0")
    get_settings.cache_clear()
    yield
    monkeypatch.undo()
    get_settings.cache_clear()


@pytest.fixture
def sweep(committed_db: Session, make_caller: MakeCaller, no_rate_limit: None) -> Iterator[Sweep]:
    caller = make_caller(role=Role.ADMIN)
    ready, _ = make_ready_job(committed_db, caller, prompt="a harbour at night")
    app = create_app()
    with (
        TestClient(
            app,
            base_url="https://testserver",
            follow_redirects=False,
            raise_server_exceptions=False,
        ) as browser,
        TestClient(
            app,
            base_url="https://testserver",
            follow_redirects=False,
            raise_server_exceptions=False,
        ) as api,
    ):
        csrf = sign_in(committed_db, browser, caller.person)
        browser.headers.update(csrf)
        yield Sweep(browser=browser, api=api, caller=caller, ready_id=ready.id)


def _get_routes() -> list[RouteCall]:
    return [c for c in route_calls(create_app()) if c.method == "GET"]


def test_the_sweep_covers_pages_and_the_api() -> None:
    paths = {c.path for c in _get_routes()}
    assert {"/gallery", "/prompts", "/", "/api/v1/jobs", "/costs/export.csv"} <= paths


def test_nul_in_any_get_query_is_a_422(sweep: Sweep) -> None:
    for call in _get_routes():
        url, response = sweep.send(call, NUL_QUERY)
        assert response.status_code == 422, (url, response.status_code, response.text[:300])  # type: ignore[attr-defined]
        if call.is_api:
            error = response.json()["error"]  # type: ignore[attr-defined]
            assert error["code"] == "invalid_request"
            assert {"q", "model"} <= {f["field"] for f in error["fields"]}
        else:
            assert "NUL" in response.text  # type: ignore[attr-defined]


def test_nul_in_a_path_is_a_422(sweep: Sweep) -> None:
    for path in ("/gallery/%00", "/jobs/%00/card", "/api/v1/jobs/%00"):
        client = sweep.api if path.startswith("/api/") else sweep.browser
        response = client.get(
            path, headers=sweep.caller.headers if path.startswith("/api/") else {}
        )
        assert response.status_code == 422, (path, response.text[:200])


def test_giant_numbers_and_garbage_never_answer_500(sweep: Sweep) -> None:
    from urllib.parse import urlencode

    failures = []
    for call in _get_routes():
        for name, value in HOSTILE_PARAMS:
            url, response = sweep.send(call, urlencode({name: value}))
            # 503 is /readyz saying no worker runs here: an answer, not a crash.
            if response.status_code in (429, 500):  # type: ignore[attr-defined]
                failures.append((url[:120], response.status_code))  # type: ignore[attr-defined]
    assert failures == []


def test_over_large_cursors_and_offsets_get_clear_answers(sweep: Sweep) -> None:
    api = sweep.api
    jobs = api.get("/api/v1/jobs", params={"cursor": BAD_CURSOR}, headers=sweep.caller.headers)
    assert jobs.status_code == 422
    assert jobs.json()["error"]["fields"] == [
        {"field": "cursor", "message": "the cursor is invalid; start from the first page"}
    ]
    ledger = api.get("/api/v1/costs/ledger", params={"offset": GIANT}, headers=sweep.caller.headers)
    assert ledger.status_code == 422
    assert ledger.json()["error"]["fields"][0]["field"] == "offset"

    more = sweep.browser.get("/gallery/more", params={"after": BAD_CURSOR})
    assert more.status_code == 200
    assert "the cursor is invalid; start from the first page" in more.text
    far = sweep.browser.get("/prompts", params={"offset": GIANT})
    assert far.status_code == 200
    estimate = sweep.browser.get("/generate/estimate", params={"width": str(10**200)})
    assert estimate.status_code == 200


def _job_count(db: Session) -> int:
    db.expire_all()
    return int(db.scalar(select(func.count()).select_from(Job)) or 0)


def test_nul_and_control_characters_in_forms_are_refused(
    committed_db: Session, sweep: Sweep
) -> None:
    before = _job_count(committed_db)
    browser = sweep.browser
    form = {"model": "flux-2-pro", "prompt": "a harbour\x00 at night", "count": "1"}
    # A urlencoded form: refused at the door.
    urlencoded = browser.post("/generate", data=form)
    assert urlencoded.status_code == 422
    assert "prompt" in urlencoded.text and "NUL" in urlencoded.text
    # A multipart form (with a file field): the prompt check of the catalogue names the field.
    picture = {"reference_images": ("", io.BytesIO(b""), "application/octet-stream")}
    multipart = browser.post("/generate", data=form, files=picture)
    assert multipart.status_code == 422
    assert "prompt must not contain control characters" in multipart.text
    bell = browser.post("/generate", data={**form, "prompt": "bell\x07"}, files=picture)
    assert "prompt must not contain control characters" in bell.text
    # The JSON API refuses other control characters in the prompt, naming the field.
    api = sweep.api.post(
        "/api/v1/jobs",
        json={"model": "flux-2-pro", "prompt": "escape \x1b[31m red"},
        headers=sweep.caller.headers,
    )
    assert api.status_code == 422
    assert api.json()["error"]["fields"] == [
        {"field": "prompt", "message": "prompt must not contain control characters"}
    ]
    assert _job_count(committed_db) == before

    # Other forms too: account name, sign-in.
    name = browser.post("/account/name", data={"name": "Eve\x00"})
    assert name.status_code == 422
    committed_db.expire_all()
    assert "\x00" not in committed_db.get(User, sweep.caller.person.user.id).name  # type: ignore[union-attr]
    login = browser.post("/login", data={"email": "a\x00@example.com", "password": "x"})
    assert login.status_code == 422
