"""Two real `studio worker` processes on one host: two names, two heartbeats, two on /ops."""

from __future__ import annotations

import socket

from sqlalchemy.orm import Session

from app.auth.models import Role
from app.ops import heartbeat
from tests.auth.support import login
from tests.factories import make_person
from tests.ops.conftest import ClientFactory, sample
from tests.pipeline_support import WorkerProcess, pipeline_env, wait_until


def test_each_worker_of_a_host_beats_and_counts_on_its_own(
    committed_db: Session, client_factory: ClientFactory, own_redis_keys: None
) -> None:
    admin = make_person(committed_db, role=Role.ADMIN)
    committed_db.commit()
    client = client_factory()
    login(client, admin.user.email, admin.password)
    env = pipeline_env()
    with (
        WorkerProcess(env, concurrency=1, name="first") as first,
        WorkerProcess(env, concurrency=1, name="second") as second,
    ):
        beats = heartbeat.wait_for("worker", 2, timeout=20)
        assert first.proc is not None and second.proc is not None
        assert sorted(b.pid for b in beats) == sorted([first.proc.pid, second.proc.pid])
        names = {b.pid: b.name for b in beats}
        host = socket.gethostname()
        assert names[first.proc.pid] == f"studio-worker-{first.proc.pid}@{host}"
        assert names[second.proc.pid] == f"studio-worker-{second.proc.pid}@{host}"
        assert {b.host for b in beats} == {host}

        html = client.get("/ops/live").text
        assert 'data-figure="workers">2<' in html
        for name in names.values():
            assert f'<tr data-worker="{name}"><td>{name}</td><td>{host}</td>' in html
        metrics = client_factory().get("/metrics").text
        assert sample(metrics, "studio_workers_alive") == 2

        # Lost without a goodbye (SIGKILL): its heartbeat expires, the other one stays.
        second.kill()
        wait_until(
            lambda: len(heartbeat.alive("worker")) == 1,
            timeout=heartbeat.BEAT_TTL_S + 10,
            message="the killed worker's heartbeat to expire",
        )
        (left,) = heartbeat.alive("worker")
        assert left.pid == first.proc.pid
        html = client.get("/ops/live").text
        assert 'data-figure="workers">1<' in html
        assert names[first.proc.pid] in html and names[second.proc.pid] not in html
        metrics = client_factory().get("/metrics").text
        assert sample(metrics, "studio_workers_alive") == 1
