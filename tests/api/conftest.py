"""API test wiring: an app client, and people with API tokens (or sessions) in their teams."""

from __future__ import annotations

import io
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal

import pytest
from fastapi.testclient import TestClient
from PIL import Image as PILImage
from sqlalchemy.orm import Session

from app.auth.deps import session_cookie_name
from app.auth.models import Role, Team
from app.auth.service import start_session
from app.auth.tokens import issue_token
from app.jobs.models import Image, Job, JobStatus
from app.main import create_app
from app.storage import get_storage, image_keys
from tests.factories import Person, make_person


@dataclass
class Caller:
    """A person of a team and the Bearer token that acts as them there."""

    person: Person
    token_id: uuid.UUID
    secret: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secret}"}

    @property
    def team(self) -> Team:
        return self.person.team


MakeCaller = Callable[..., Caller]


@pytest.fixture
def client() -> Iterator[TestClient]:
    with TestClient(create_app(), base_url="https://testserver") as test_client:
        yield test_client


@pytest.fixture
def make_caller(committed_db: Session) -> MakeCaller:
    """Build a committed person (new team unless given) with a fresh API token."""

    def build(team: Team | None = None, role: Role = Role.MEMBER) -> Caller:
        person = make_person(committed_db, team=team, role=role)
        issued = issue_token(
            committed_db, user_id=person.user.id, team_id=person.team.id, name="tests"
        )
        committed_db.commit()
        return Caller(person=person, token_id=issued.token.id, secret=issued.secret)

    return build


def sign_in(db: Session, client: TestClient, person: Person) -> dict[str, str]:
    """Give `client` a browser session for `person`; returns the CSRF header state changes need."""
    raw, session = start_session(db, person.user, team_id=person.team.id)
    db.commit()
    client.cookies.set(session_cookie_name(), raw)
    return {"X-CSRF-Token": session.csrf_token}


def picture(fmt: str = "PNG", size: tuple[int, int] = (32, 24)) -> bytes:
    buffer = io.BytesIO()
    PILImage.new("RGB", size, (200, 80, 40)).save(buffer, format=fmt)
    return buffer.getvalue()


def make_job(
    db: Session,
    caller: Caller,
    *,
    status: JobStatus = JobStatus.QUEUED,
    prompt: str = "a lighthouse at dusk",
    model: str = "flux-2-pro",
) -> Job:
    """A committed job row of `caller` in any state (the pipeline itself is not under test)."""
    job = Job(
        id=uuid.uuid4(),
        team_id=caller.team.id,
        user_id=caller.person.user.id,
        status=status.value,
        model=model,
        prompt=prompt,
        params={"prompt": prompt, "width": 1024, "height": 1024, "seed": 7},
        width=1024,
        height=1024,
        seed=7,
        estimated_credits=Decimal("3"),
        error_code="bfl_error" if status is JobStatus.FAILED else None,
        error_message="BFL failed" if status is JobStatus.FAILED else None,
    )
    db.add(job)
    db.commit()
    return job


def make_ready_job(db: Session, caller: Caller, prompt: str = "a red fox") -> tuple[Job, bytes]:
    """A ready job with a stored original (PNG) and WebP thumbnail; returns the original."""
    job = make_job(db, caller, status=JobStatus.READY, prompt=prompt)
    original, thumbnail = picture("PNG"), picture("WEBP", (16, 12))
    key, thumb_key = image_keys(caller.team.id, job.id, "png")
    storage = get_storage()
    storage.put(key, original, "image/png")
    storage.put(thumb_key, thumbnail, "image/webp")
    db.add(
        Image(
            job_id=job.id,
            team_id=caller.team.id,
            storage_key=key,
            thumb_key=thumb_key,
            content_type="image/png",
            width=32,
            height=24,
            size_bytes=len(original),
        )
    )
    db.commit()
    return job, original


def assert_error(response: object, status: int, code: str) -> dict[str, object]:
    """The response has `status` and the shared error shape with `code`; returns the body."""
    from httpx import Response

    assert isinstance(response, Response)
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert error["code"] == code, body
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["fields"], list)
    return error
