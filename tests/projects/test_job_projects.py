"""Every job belongs to one of its team's projects, through the service, the API and the page."""

from __future__ import annotations

import uuid

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from app.auth.models import Membership
from app.costs.models import Charge, Reservation
from app.costs.service import record_charge
from app.errors import NotFound, RequestInvalid
from app.jobs import state
from app.jobs.models import Job
from app.jobs.service import create_jobs, retry_job
from app.projects.models import DEFAULT_PROJECT_NAME, ChargeDay, Project
from app.projects.service import (
    Changer,
    create_project,
    default_project,
    list_projects,
    set_archived,
)
from tests.api.conftest import Caller, MakeCaller
from tests.factories import Person, make_person
from tests.signed_in import SignIn

PARAMS = {"prompt": "a red fox", "width": 512, "height": 512}


def _changer(person: Person) -> Changer:
    return Changer(team_id=person.team.id, user_id=person.user.id, email=person.user.email)


def _create(db: Session, person: Person, project_id: uuid.UUID | None = None) -> list[Job]:
    return create_jobs(
        db,
        user_id=person.user.id,
        team_id=person.team.id,
        model="flux-2-pro",
        params=PARAMS,
        project_id=project_id,
    )


def test_a_new_team_starts_with_one_default_project(db: Session) -> None:
    person = make_person(db)
    projects = list_projects(db, team_id=person.team.id)
    assert [(p.name, p.is_default, p.archived) for p in projects] == [
        (DEFAULT_PROJECT_NAME, True, False)
    ]


def test_jobs_go_to_the_named_project_and_their_hold_and_charge_carry_it(db: Session) -> None:
    person = make_person(db)
    client_a = create_project(db, _changer(person), name="Client A")
    jobs = _create(db, person, client_a.id)
    assert jobs[0].project_id == client_a.id
    held = db.scalar(select(Reservation).where(Reservation.job_id == jobs[0].id))
    assert held is not None and held.project_id == client_a.id
    jobs[0].bfl_task_id = "task-1"
    jobs[0].cost_credits = jobs[0].estimated_credits
    assert record_charge(db, jobs[0])
    charge = db.scalar(select(Charge).where(Charge.job_id == jobs[0].id))
    assert charge is not None and charge.project_id == client_a.id
    day = db.scalar(select(ChargeDay).where(ChargeDay.project_id == client_a.id))
    assert day is not None and day.credits == charge.credits and day.charges == 1
    # Charging the same job again writes nothing, in the ledger or the rollup.
    assert not record_charge(db, jobs[0])
    db.refresh(day)
    assert day.charges == 1


def test_without_a_project_the_last_used_one_is_chosen_else_the_default(db: Session) -> None:
    person = make_person(db)
    first = _create(db, person)
    assert first[0].project_id == default_project(db, team_id=person.team.id).id
    client_a = create_project(db, _changer(person), name="Client A")
    _create(db, person, client_a.id)
    membership = db.get(Membership, (person.user.id, person.team.id))
    assert membership is not None and membership.last_project_id == client_a.id
    again = _create(db, person)
    assert again[0].project_id == client_a.id
    # An archived last project is not used again: the default takes over.
    set_archived(db, _changer(person), project_id=client_a.id, archived=True)
    after = _create(db, person)
    assert after[0].project_id == default_project(db, team_id=person.team.id).id


def test_another_teams_project_is_not_found_and_an_archived_one_is_refused(db: Session) -> None:
    alice, bob = make_person(db), make_person(db)
    theirs = create_project(db, _changer(bob), name="Secret")
    with pytest.raises(NotFound):
        _create(db, alice, theirs.id)
    with pytest.raises(NotFound):
        _create(db, alice, uuid.uuid4())
    old = create_project(db, _changer(alice), name="Old")
    set_archived(db, _changer(alice), project_id=old.id, archived=True)
    with pytest.raises(RequestInvalid) as refused:
        _create(db, alice, old.id)
    assert [f.field for f in refused.value.fields] == ["project_id"]
    assert "archived" in refused.value.message
    assert db.scalar(select(Job.id).where(Job.team_id == alice.team.id)) is None


def test_retry_keeps_the_project_of_the_job_it_repeats(db: Session) -> None:
    person = make_person(db)
    client_a = create_project(db, _changer(person), name="Client A")
    job = _create(db, person, client_a.id)[0]
    state.cancel(db, job.id, by_name="")
    _create(db, person)  # last used is still Client A; move it to the default
    other = create_project(db, _changer(person), name="Client B")
    _create(db, person, other.id)
    retried = retry_job(db, job_id=job.id, team_id=person.team.id, user_id=person.user.id)
    assert retried[0].project_id == client_a.id


def test_a_job_row_inserted_without_a_project_joins_its_teams_default(db: Session) -> None:
    person = make_person(db)
    job = Job(
        team_id=person.team.id,
        user_id=person.user.id,
        model="flux-2-pro",
        prompt="x",
        params={},
        width=512,
        height=512,
    )
    db.add(job)
    db.flush()
    assert job.project_id == default_project(db, team_id=person.team.id).id


def test_the_column_is_not_null_in_the_database(db: Session) -> None:
    nullable = db.scalar(
        text(
            "SELECT is_nullable FROM information_schema.columns "
            "WHERE table_name = 'jobs' AND column_name = 'project_id'"
        )
    )
    assert nullable == "NO"


def test_the_api_takes_a_project_id_and_refuses_others(
    committed_db: Session, client: TestClient, make_caller: MakeCaller
) -> None:
    alice: Caller = make_caller()
    bob: Caller = make_caller()
    mine = create_project(committed_db, _changer(alice.person), name="Client A")
    theirs = create_project(committed_db, _changer(bob.person), name="Client B")
    committed_db.commit()
    body = {"model": "flux-2-pro", "prompt": "a red fox", "params": {"width": 512, "height": 512}}

    made = client.post(
        "/api/v1/jobs", json={**body, "project_id": str(mine.id)}, headers=alice.headers
    )
    assert made.status_code == 201, made.text
    assert made.json()["jobs"][0]["project_id"] == str(mine.id)

    other = client.post(
        "/api/v1/jobs", json={**body, "project_id": str(theirs.id)}, headers=alice.headers
    )
    assert other.status_code == 404
    assert other.json()["error"]["code"] == "not_found"

    malformed = client.post(
        "/api/v1/jobs", json={**body, "project_id": "client-a"}, headers=alice.headers
    )
    assert malformed.status_code == 422
    assert any("project_id" in f["field"] for f in malformed.json()["error"]["fields"])

    # Omitted: the project the caller used last.
    again = client.post("/api/v1/jobs", json=body, headers=alice.headers)
    assert again.status_code == 201
    assert again.json()["jobs"][0]["project_id"] == str(mine.id)


def test_the_generate_page_offers_the_active_projects_and_uses_the_one_chosen(
    committed_db: Session, sign_in: SignIn
) -> None:
    alice = make_person(committed_db)
    client_a = create_project(committed_db, _changer(alice), name="Client A")
    gone = create_project(committed_db, _changer(alice), name="Gone")
    set_archived(committed_db, _changer(alice), project_id=gone.id, archived=True)
    committed_db.commit()
    browser = sign_in(alice)

    page = browser.get("/")
    assert page.status_code == 200
    assert 'name="project_id"' in page.text
    assert "Client A" in page.text and "Gone" not in page.text

    form = {
        "model": "flux-2-pro",
        "prompt": "a red fox",
        "seed_mode": "random",
        "count": "1",
        "width": "512",
        "height": "512",
        "project_id": str(client_a.id),
    }
    sent = browser.post("/generate", data=form)
    assert sent.status_code == 303, sent.text
    job = committed_db.scalar(select(Job).where(Job.user_id == alice.user.id))
    assert job is not None and job.project_id == client_a.id
    # The page remembers it: the select now starts on Client A.
    again = browser.get("/")
    assert f'<option value="{client_a.id}" selected>' in again.text

    archived = browser.post("/generate", data={**form, "project_id": str(gone.id)})
    assert archived.status_code == 422
    assert "archived" in archived.text
    bad = browser.post("/generate", data={**form, "project_id": "nope"})
    assert bad.status_code == 422
    assert "choose one of the team" in bad.text


def test_only_the_default_project_is_made_by_the_migration_per_team(db: Session) -> None:
    person = make_person(db)
    defaults = db.scalars(
        select(Project).where(Project.team_id == person.team.id, Project.is_default)
    ).all()
    assert len(defaults) == 1


def test_gallery_and_prompt_history_filter_by_project(
    committed_db: Session, client: TestClient, make_caller: MakeCaller, sign_in: SignIn
) -> None:
    alice: Caller = make_caller()
    client_a = create_project(committed_db, _changer(alice.person), name="Client A")
    committed_db.commit()
    body = {"model": "flux-2-pro", "params": {"width": 512, "height": 512}}
    for prompt, project in (("a fox in client a", client_a.id), ("a hare in general", None)):
        sent = {**body, "prompt": prompt, **({"project_id": str(project)} if project else {})}
        if project is None:
            general = default_project(committed_db, team_id=alice.team.id)
            committed_db.commit()
            sent["project_id"] = str(general.id)
        assert client.post("/api/v1/jobs", json=sent, headers=alice.headers).status_code == 201
    jobs = client.get("/api/v1/jobs", params={"project": str(client_a.id)}, headers=alice.headers)
    assert [j["prompt"] for j in jobs.json()["items"]] == ["a fox in client a"]
    prompts = client.get(
        "/api/v1/prompts", params={"project": str(client_a.id)}, headers=alice.headers
    ).json()
    assert [p["prompt"] for p in prompts["items"]] == ["a fox in client a"]
    browser = sign_in(alice.person)
    gallery = browser.get("/gallery", params={"project": str(client_a.id)}).text
    assert "a fox in client a" in gallery and "a hare in general" not in gallery
    history = browser.get("/prompts", params={"project": str(client_a.id)}).text
    assert "a fox in client a" in history and "a hare in general" not in history
    bad = client.get("/api/v1/jobs", params={"project": "x"}, headers=alice.headers)
    assert bad.status_code == 422
