"""Fixtures for the operations tests: clients from chosen addresses, jobs in any state."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.orm import Session

from app.db import utcnow
from app.jobs.models import Job
from app.main import create_app
from app.settings import get_settings
from tests.factories import Person

_seeds = itertools.count(1)

ClientFactory = Callable[..., TestClient]


@pytest.fixture
def client_factory() -> Iterator[ClientFactory]:
    """TestClients of one app, each from the address given (loopback by default)."""
    app = create_app()
    clients: list[TestClient] = []

    def make(address: str = "127.0.0.1", **kwargs: Any) -> TestClient:
        client = TestClient(app, base_url="https://testserver", client=(address, 50000), **kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def sample(text: str, name: str, **labels: str) -> float | None:
    """The first sample of `name` with these labels in a Prometheus exposition, or None."""
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == name and all(found.labels.get(k) == v for k, v in labels.items()):
                return float(found.value)
    return None


def make_job(
    db: Session,
    person: Person,
    status: str = "queued",
    *,
    model: str = "flux-2-pro",
    prompt: str = "a lighthouse at dusk",
    age: timedelta = timedelta(0),
    **fields: Any,
) -> Job:
    """A job row in any state, inserted directly (the pipeline's own tests cover how rows get
    there; these tests only read them)."""
    created = utcnow() - age
    job = Job(
        team_id=person.team.id,
        user_id=person.user.id,
        status=status,
        model=model,
        prompt=prompt,
        params={"prompt": prompt},
        width=512,
        height=512,
        seed=next(_seeds),
        estimated_credits=Decimal("3"),
        created_at=created,
        **fields,
    )
    db.add(job)
    db.flush()
    return job


def finished_fields(
    submitted_ago_s: float, bfl_s: float, store_s: float, now: datetime | None = None
) -> dict[str, datetime]:
    """Timestamps of a job submitted `submitted_ago_s` ago that took `bfl_s` at BFL."""
    now = now or utcnow()
    submitted = now - timedelta(seconds=submitted_ago_s)
    ready = submitted + timedelta(seconds=bfl_s)
    return {
        "claimed_at": submitted,
        "submitted_at": submitted,
        "bfl_ready_at": ready,
        "finished_at": ready + timedelta(seconds=store_s),
    }


@pytest.fixture
def own_redis_keys() -> Iterator[None]:
    """Delete this run's heartbeat keys after the test (only keys under the run's prefix)."""
    yield
    settings = get_settings()
    client = redis.Redis.from_url(settings.redis_url)
    try:
        keys = list(
            client.scan_iter(match=f"{settings.CELERY_KEY_PREFIX}studio:heartbeat:*", count=500)
        )
        if keys:
            client.delete(*keys)
    finally:
        client.close()
