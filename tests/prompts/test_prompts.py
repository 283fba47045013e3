"""Prompt history: distinct prompts with people, counts, last use and cost; search; mine; walls."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.jobs.models import Job, JobStatus
from app.prompts.service import prompt_history
from tests.factories import make_person
from tests.gallery.rows import add_job
from tests.signed_in import SignIn

T0 = datetime(2025, 5, 1, 9, 0, tzinfo=UTC)


def test_distinct_prompts_with_usage_and_cost(db: Session) -> None:
    alice = make_person(db)
    bob = make_person(db, team=alice.team)
    outsider = make_person(db)
    add_job(db, alice, "misty harbour", created_at=T0, cost=Decimal("3"))
    add_job(db, bob, "misty harbour", created_at=T0 + timedelta(hours=2), cost=Decimal("4.5"))
    add_job(
        db,
        bob,
        "misty harbour",
        created_at=T0 + timedelta(hours=1),
        status=JobStatus.FAILED,
        cost=None,
    )
    latest = add_job(
        db, alice, "desert road", created_at=T0 + timedelta(hours=3), model="flux-2-flex"
    )
    add_job(db, outsider, "misty harbour", created_at=T0 + timedelta(hours=5))

    page = prompt_history(db, alice.team.id)
    assert [p.prompt for p in page.items] == ["desert road", "misty harbour"]
    harbour = page.items[1]
    assert harbour.uses == 3
    assert harbour.credits == Decimal("7.5")
    assert harbour.people == sorted([alice.user.name, bob.user.name])
    assert harbour.last_used_at == T0 + timedelta(hours=2)
    assert page.items[0].last_job_id == latest.id and page.items[0].last_model == "flux-2-flex"

    mine = prompt_history(db, alice.team.id, user_id=alice.user.id)
    assert {p.prompt: p.uses for p in mine.items} == {"desert road": 1, "misty harbour": 1}
    assert [p.prompt for p in prompt_history(db, alice.team.id, q="harbor OR harbour").items] == [
        "misty harbour"
    ]


def test_pages_continue_by_offset(db: Session) -> None:
    alice = make_person(db)
    for i in range(5):
        add_job(db, alice, f"prompt {i}", created_at=T0 + timedelta(minutes=i))
    first = prompt_history(db, alice.team.id, limit=3)
    assert first.next_offset == 3
    second = prompt_history(db, alice.team.id, offset=3, limit=3)
    assert second.next_offset is None
    assert [p.prompt for p in first.items + second.items] == [
        f"prompt {i}" for i in range(4, -1, -1)
    ]


def test_prompts_page(committed_db: Session, sign_in: SignIn) -> None:
    alice = make_person(committed_db)
    bob = make_person(committed_db, team=alice.team)
    add_job(committed_db, alice, "golden hour portrait")
    add_job(committed_db, bob, "neon alley at night")
    committed_db.commit()
    client = sign_in(alice)
    team = client.get("/prompts")
    assert team.status_code == 200
    assert "golden hour portrait" in team.text and "neon alley at night" in team.text
    latest = committed_db.scalars(select(Job.id).where(Job.prompt == "golden hour portrait")).one()
    assert f"/?from={latest}" in team.text
    mine = client.get("/prompts", params={"view": "mine"})
    assert "golden hour portrait" in mine.text and "neon alley at night" not in mine.text
    found = client.get("/prompts", params={"q": "neon"})
    assert "neon alley at night" in found.text and "golden hour portrait" not in found.text
    reuse = client.get("/", params={"prompt": "golden hour portrait", "model": "flux-2-flex"})
    assert "golden hour portrait" in reuse.text
    assert 'value="flux-2-flex" checked' in reuse.text
