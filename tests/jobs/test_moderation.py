"""BFL's moderation reasons reach people: on the job, its card, its detail page and the API."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from app.auth.tokens import issue_token
from app.emulator import EmulatorServer
from app.jobs.models import JobStatus
from tests.factories import Person
from tests.pipeline_support import WorkerProcess, queue_jobs, wait_for_terminal
from tests.signed_in import SignIn, sign_in  # noqa: F401 (fixture)

pytestmark = pytest.mark.pipeline


@pytest.mark.parametrize(
    ("trigger", "reasons", "expected"),
    [
        (
            "[[request-moderated]]",
            ["Derivative Works Filter"],
            "BFL's moderation refused the prompt or a reference image (Derivative Works "
            "Filter); change them and try again.",
        ),
        (
            "[[content-moderated]]",
            ["Derivative Works Filter", "Public Figures Filter"],
            "BFL's moderation withheld the generated image (Derivative Works Filter, Public "
            "Figures Filter); try another prompt or seed.",
        ),
    ],
)
def test_moderation_reasons_are_kept_and_shown(
    worker: WorkerProcess,
    emulator: EmulatorServer,
    committed_db: Session,
    engine: Engine,
    person: Person,
    sign_in: SignIn,  # noqa: F811
    trigger: str,
    reasons: list[str],
    expected: str,
) -> None:
    emulator.configure(moderation_reasons=reasons)
    (job,) = queue_jobs(committed_db, person.user.id, person.team.id, prompt=f"{trigger} a mouse")
    (done,) = wait_for_terminal(engine, [job.id], timeout=30)
    assert (done.status, done.moderation_reasons) == (JobStatus.MODERATED, reasons)
    assert done.error_message == expected

    browser = sign_in(person)
    card = browser.get(f"/jobs/{job.id}/card")
    assert card.status_code == 200
    assert f"Moderation: {', '.join(reasons)}" in card.text
    detail = browser.get(f"/gallery/{job.id}")
    assert detail.status_code == 200
    assert f'<dd class="job-moderation">{", ".join(reasons)}</dd>' in detail.text

    from app.main import app

    issued = issue_token(committed_db, user_id=person.user.id, team_id=person.team.id, name="t")
    committed_db.commit()
    with TestClient(app, base_url="https://testserver") as api:
        answer = api.get(
            f"/api/v1/jobs/{job.id}", headers={"Authorization": f"Bearer {issued.secret}"}
        )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["status"], body["error_code"]) == (
        "moderated",
        trigger.strip("[]").replace("-", "_"),
    )
    assert body["moderation_reasons"] == reasons
    assert body["error_message"] == expected


def test_a_job_that_ends_well_has_no_moderation_reasons(
    worker: WorkerProcess, committed_db: Session, engine: Engine, person: Person
) -> None:
    (job,) = queue_jobs(committed_db, person.user.id, person.team.id, prompt="a calm sea")
    (done,) = wait_for_terminal(engine, [job.id], timeout=30)
    assert (done.status, done.moderation_reasons) == (JobStatus.READY, None)
