"""Moving jobs to another project: costs, holds and the daily rollup move with them, exactly."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.audit.models import AuditEntry
from app.auth.models import Role
from app.bulk.service import run
from app.costs.models import Charge, ChargeOutcome, ChargePromptMonth, Reservation
from app.costs.service import rebuild_rollup, reserve_for_jobs
from app.errors import RequestInvalid
from app.jobs.models import Job
from app.jobs.moves import NOT_IN_TEAM, NOT_YOURS, ProjectNotFound, move_jobs
from app.projects.models import ChargeDay
from app.projects.service import Changer, create_project, default_project, set_archived
from tests.api.conftest import Caller, MakeCaller
from tests.costs.factories import make_charge, make_job
from tests.factories import Person, make_person


def _changer(person: Person) -> Changer:
    return Changer(team_id=person.team.id, user_id=person.user.id, email=person.user.email)


def _rollup_by_project(db: Session, team_id: uuid.UUID) -> dict[uuid.UUID, tuple[Decimal, int]]:
    rows = db.execute(
        select(ChargeDay.project_id, func.sum(ChargeDay.credits), func.sum(ChargeDay.charges))
        .where(ChargeDay.team_id == team_id)
        .group_by(ChargeDay.project_id)
    ).all()
    return {p: (Decimal(c), int(n)) for p, c, n in rows if n}


def _ledger_by_project(db: Session, team_id: uuid.UUID) -> dict[uuid.UUID, tuple[Decimal, int]]:
    rows = db.execute(
        select(Charge.project_id, func.sum(Charge.credits), func.count())
        .where(Charge.team_id == team_id)
        .group_by(Charge.project_id)
    ).all()
    return {p: (Decimal(c), int(n)) for p, c, n in rows}


def _rollup_rows(db: Session, team_id: uuid.UUID) -> set[tuple[object, ...]]:
    rows = db.execute(
        select(
            ChargeDay.day,
            ChargeDay.project_id,
            ChargeDay.user_id,
            ChargeDay.model,
            ChargeDay.credits,
            ChargeDay.charges,
        ).where(ChargeDay.team_id == team_id)
    ).all()
    outcomes = db.execute(
        select(
            ChargeOutcome.day,
            ChargeOutcome.project_id,
            ChargeOutcome.user_id,
            ChargeOutcome.model,
            ChargeOutcome.status,
            ChargeOutcome.credits,
            ChargeOutcome.charges,
        ).where(ChargeOutcome.team_id == team_id)
    ).all()
    prompts = db.execute(
        select(
            ChargePromptMonth.month,
            ChargePromptMonth.project_id,
            ChargePromptMonth.user_id,
            ChargePromptMonth.prompt_md5,
            ChargePromptMonth.credits,
            ChargePromptMonth.charges,
        ).where(ChargePromptMonth.team_id == team_id)
    ).all()
    return (
        {("day", *r) for r in rows}
        | {("outcome", *r) for r in outcomes}
        | {("prompt", *r) for r in prompts}
    )


def test_random_moves_keep_every_project_equal_to_the_ledger(db: Session) -> None:
    rng = random.Random(20261130)
    boss = make_person(db, role=Role.MANAGER)
    ann = make_person(db, team=boss.team)
    people = [boss, ann]
    projects = [default_project(db, team_id=boss.team.id).id] + [
        create_project(db, _changer(boss), name=f"Client {n}").id for n in range(3)
    ]
    start = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)
    jobs: list[Job] = []
    for _ in range(60):
        jobs.append(
            make_charge(
                db,
                rng.choice(people),
                Decimal(rng.randint(1, 900)) / 100,
                at=start + timedelta(hours=rng.randint(0, 24 * 20)),
                model=rng.choice(["flux-2-pro", "flux-2-flex"]),
                project_id=rng.choice(projects),
            )
        )
    team_before = db.scalar(select(func.sum(Charge.credits)).where(Charge.team_id == boss.team.id))
    rollup_before = db.scalar(
        select(func.sum(ChargeDay.credits)).where(ChargeDay.team_id == boss.team.id)
    )
    assert team_before == rollup_before

    for _ in range(8):
        picked = rng.sample(jobs, rng.randint(1, 12))
        target = rng.choice(projects)
        outcome = move_jobs(
            db,
            team_id=boss.team.id,
            user_id=boss.user.id,
            is_manager=True,
            job_ids=[j.id for j in picked],
            project_id=target,
        )
        assert outcome.refused == [] and len(outcome.moved) == len(picked)
        assert _rollup_by_project(db, boss.team.id) == _ledger_by_project(db, boss.team.id)

    moved_ids = {j.id for j in jobs}
    jobs_by_project = dict(
        db.execute(select(Job.id, Job.project_id).where(Job.id.in_(moved_ids))).all()
    )
    charges_by_project = dict(
        db.execute(
            select(Charge.job_id, Charge.project_id).where(Charge.job_id.in_(moved_ids))
        ).all()
    )
    assert jobs_by_project == charges_by_project
    assert (
        db.scalar(select(func.sum(Charge.credits)).where(Charge.team_id == boss.team.id))
        == team_before
    )
    assert (
        db.scalar(select(func.sum(ChargeDay.credits)).where(ChargeDay.team_id == boss.team.id))
        == team_before
    )
    # Row for row what a rebuild from the ledger gives: no empty or negative rows left behind.
    incremental = _rollup_rows(db, boss.team.id)
    rebuild_rollup(db, team_id=boss.team.id)
    assert _rollup_rows(db, boss.team.id) == incremental


def test_a_held_reservation_moves_with_its_job(db: Session) -> None:
    ann = make_person(db)
    general = default_project(db, team_id=ann.team.id)
    client_a = create_project(db, _changer(ann), name="Client A")
    job = make_job(db, ann, estimated="4", project_id=general.id)
    reserve_for_jobs(db, [job])
    outcome = move_jobs(
        db,
        team_id=ann.team.id,
        user_id=ann.user.id,
        is_manager=False,
        job_ids=[job.id],
        project_id=client_a.id,
    )
    assert outcome.moved == [job.id]
    held = db.scalar(select(Reservation.project_id).where(Reservation.job_id == job.id))
    assert held == client_a.id
    assert db.scalar(select(Job.project_id).where(Job.id == job.id)) == client_a.id


def test_rights_targets_and_the_audit_of_a_managers_move(db: Session) -> None:
    boss = make_person(db, role=Role.MANAGER)
    ann = make_person(db, team=boss.team)
    ben = make_person(db, team=boss.team)
    stranger = make_person(db)
    client_a = create_project(db, _changer(boss), name="Client A")
    old = create_project(db, _changer(boss), name="Old")
    set_archived(db, _changer(boss), project_id=old.id, archived=True)
    theirs = create_project(db, _changer(stranger), name="Theirs")
    anns = make_charge(db, ann, "2")
    bens = make_charge(db, ben, "3")
    outsider = make_charge(db, stranger, "5")

    result = run(
        db,
        action="project",
        team_id=boss.team.id,
        user_id=ann.user.id,
        is_manager=False,
        job_ids=[anns.id, bens.id, outsider.id],
        project_id=client_a.id,
    )
    assert result.changed == 1
    assert {(r.job_id, r.reason) for r in result.refused} == {
        (bens.id, NOT_YOURS),
        (outsider.id, NOT_IN_TEAM),
    }
    charged = dict(db.execute(select(Charge.job_id, Charge.project_id)).all())
    assert charged[anns.id] == client_a.id
    assert charged[bens.id] != client_a.id and charged[outsider.id] != client_a.id
    assert (
        db.scalar(
            select(func.count())
            .select_from(AuditEntry)
            .where(AuditEntry.action == "job.moved", AuditEntry.team_id == boss.team.id)
        )
        == 0
    )

    run(
        db,
        action="project",
        team_id=boss.team.id,
        user_id=boss.user.id,
        is_manager=True,
        job_ids=[bens.id],
        project_id=client_a.id,
    )
    entry = db.scalars(select(AuditEntry).where(AuditEntry.action == "job.moved")).one()
    assert entry.target_id == str(bens.id) and entry.actor_id == boss.user.id
    assert entry.after == {"project_id": str(client_a.id)}
    assert entry.before is not None and entry.before["credits"] == "3.0000"

    for target, error, field in (
        (theirs.id, ProjectNotFound, "project_id"),
        (uuid.uuid4(), ProjectNotFound, "project_id"),
        (old.id, RequestInvalid, "project_id"),
        (None, RequestInvalid, "project_id"),
    ):
        try:
            move_jobs(
                db,
                team_id=boss.team.id,
                user_id=boss.user.id,
                is_manager=True,
                job_ids=[anns.id],
                project_id=target,
            )
        except (ProjectNotFound, RequestInvalid) as exc:
            assert isinstance(exc, error) and exc.fields[0].field == field
        else:
            raise AssertionError(f"moving to {target} was not refused")


def test_the_api_moves_one_job_and_many(
    committed_db: Session, client: TestClient, make_caller: MakeCaller
) -> None:
    alice: Caller = make_caller()
    bob: Caller = make_caller(team=alice.team)
    client_a = create_project(committed_db, _changer(alice.person), name="Client A")
    old = create_project(committed_db, _changer(alice.person), name="Old")
    set_archived(committed_db, _changer(alice.person), project_id=old.id, archived=True)
    mine = make_charge(committed_db, alice.person, "2")
    bobs = make_charge(committed_db, bob.person, "3")
    committed_db.commit()

    moved = client.post(
        f"/api/v1/jobs/{mine.id}/project",
        json={"project_id": str(client_a.id)},
        headers=alice.headers,
    )
    assert moved.status_code == 200, moved.text
    assert moved.json()["project_id"] == str(client_a.id)
    refused = client.post(
        f"/api/v1/jobs/{bobs.id}/project",
        json={"project_id": str(client_a.id)},
        headers=alice.headers,
    )
    assert refused.status_code == 403
    archived = client.post(
        f"/api/v1/jobs/{mine.id}/project", json={"project_id": str(old.id)}, headers=alice.headers
    )
    assert archived.status_code == 422
    assert archived.json()["error"]["fields"][0]["field"] == "project_id"
    missing = client.post(
        f"/api/v1/jobs/{mine.id}/project",
        json={"project_id": str(uuid.uuid4())},
        headers=alice.headers,
    )
    assert missing.status_code == 404
    assert missing.json()["error"]["fields"][0]["field"] == "project_id"

    general = default_project(committed_db, team_id=alice.team.id)
    committed_db.commit()
    bulk = client.post(
        "/api/v1/images/bulk",
        json={
            "action": "project",
            "project_id": str(general.id),
            "job_ids": [str(mine.id), str(bobs.id)],
        },
        headers=alice.headers,
    )
    assert bulk.status_code == 200, bulk.text
    assert bulk.json()["changed"] == 1
    assert bulk.json()["refused"] == [{"job_id": str(bobs.id), "reason": NOT_YOURS}]
    committed_db.expire_all()
    assert (
        committed_db.scalar(select(Charge.project_id).where(Charge.job_id == mine.id)) == general.id
    )
