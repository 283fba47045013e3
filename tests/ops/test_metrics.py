"""/metrics: what it reports, who may scrape it, and that every process's samples are counted."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from sqlalchemy.orm import Session

from app.bfl.errors import RateLimited
from app.costs.models import Charge, CreditBalance
from app.db import utcnow
from app.embedded import free_port
from app.ops import metrics
from app.ops.heartbeat import Heartbeat
from app.settings import get_settings
from tests.factories import make_person
from tests.ops.conftest import ClientFactory, make_job, sample
from tests.pipeline_support import ROOT, WebProcess


@pytest.fixture
def metrics_token(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    token = "scrape-token-" + os.urandom(8).hex()
    monkeypatch.setenv("METRICS_TOKEN", token)
    get_settings.cache_clear()
    yield token
    monkeypatch.delenv("METRICS_TOKEN")
    get_settings.cache_clear()


def test_metrics_report_jobs_queue_cap_credits_and_workers(
    committed_db: Session, client_factory: ClientFactory, own_redis_keys: None
) -> None:
    person = make_person(committed_db)
    make_job(committed_db, person, "queued")
    make_job(committed_db, person, "queued")
    make_job(committed_db, person, "submitting", model="flux-2-flex")
    make_job(committed_db, person, "pending", model="flux-2-flex")
    done = make_job(committed_db, person, "ready", cost_credits=Decimal("3.5"))
    committed_db.add(
        Charge(
            job_id=done.id,
            team_id=person.team.id,
            user_id=person.user.id,
            project_id=done.project_id,
            model="flux-2-pro",
            credits=Decimal("3.5"),
            usd=Decimal("0.035"),
        )
    )
    committed_db.add(CreditBalance(credits=Decimal("1234.5"), checked_at=utcnow()))
    committed_db.commit()
    beat = Heartbeat("worker", name="metrics-test-host", concurrency=3)
    beat.beat()

    response = client_factory().get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert sample(text, "studio_database_up") == 1
    assert sample(text, "studio_jobs", status="queued", model="flux-2-pro") == 2
    assert sample(text, "studio_jobs", status="pending", model="flux-2-flex") == 1
    assert sample(text, "studio_queue_depth") == 2
    assert sample(text, "studio_bfl_active_tasks") == 2
    assert sample(text, "studio_bfl_active_tasks_cap") == get_settings().BFL_MAX_ACTIVE_TASKS
    assert sample(text, "studio_bfl_effective_cap") == get_settings().BFL_MAX_ACTIVE_TASKS
    assert sample(text, "studio_bfl_outage") == 0
    assert sample(text, "studio_bfl_rate_limited") == 0
    assert sample(text, "studio_credits_spent_total", model="flux-2-pro") == 3.5
    assert sample(text, "studio_bfl_credit_balance") == 1234.5
    assert sample(text, "studio_workers_alive") == 1

    beat.stop()
    after = client_factory().get("/metrics").text
    assert sample(after, "studio_workers_alive") == 0

    # BFL's bad days, as the workers record them for the account.
    from app.jobs import account

    account.note_rate_limited(committed_db, get_settings(), RateLimited("busy"), utcnow())
    account.note_unreachable(committed_db, get_settings(), "no connection", utcnow())
    committed_db.commit()
    troubled = client_factory().get("/metrics").text
    assert sample(troubled, "studio_bfl_outage") == 1
    assert sample(troubled, "studio_bfl_rate_limited") == 0  # the outage is what people see
    # Learned from the 429: BFL was running one task of ours (the pending job).
    assert sample(troubled, "studio_bfl_effective_cap") == 1


def test_metrics_count_bfl_calls_by_outcome_and_job_changes(
    db: Session, client_factory: ClientFactory
) -> None:
    before = client_factory().get("/metrics").text
    errors_before = (
        sample(before, "studio_bfl_request_errors_total", kind="submit", error="bfl_rate_limited")
        or 0
    )
    changes_before = (
        sample(
            before,
            "studio_job_transitions_total",
            from_status="pending",
            to_status="ready",
            model="flux-2-max",
        )
        or 0
    )

    with metrics.bfl_call("poll"):
        pass
    with pytest.raises(RateLimited), metrics.bfl_call("submit"):
        raise RateLimited("the account's active-task limit is reached")
    person = make_person(db)
    db.commit()
    job = make_job(db, person, "ready", model="flux-2-max")
    job.bfl_ready_at = utcnow()
    job.finished_at = job.bfl_ready_at
    metrics.job_changed(db, job, "pending")
    db.rollback()  # a rolled-back change is not counted
    job = make_job(db, person, "ready", model="flux-2-max")
    metrics.job_changed(db, job, "pending")
    db.commit()

    text = client_factory().get("/metrics").text
    assert (
        sample(text, "studio_bfl_request_errors_total", kind="submit", error="bfl_rate_limited")
        == errors_before + 1
    )
    assert (sample(text, "studio_bfl_request_seconds_count", kind="poll", outcome="ok") or 0) >= 1
    assert (
        sample(
            text,
            "studio_job_transitions_total",
            from_status="pending",
            to_status="ready",
            model="flux-2-max",
        )
        == changes_before + 1
    )


def test_measured_transport_times_bfl_calls_by_kind(client_factory: ClientFactory) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(429 if request.method == "POST" else 200, json={})

    before = client_factory().get("/metrics").text
    with httpx.Client(transport=metrics.MeasuredTransport(httpx.MockTransport(answer))) as http:
        http.post("https://bfl.example/v1/flux-2-pro", json={})
        http.get("https://bfl.example/v1/get_result", params={"id": "x"})
        http.get("https://bfl.example/v1/credits")
    text = client_factory().get("/metrics").text

    def grew(kind: str, outcome: str) -> float:
        labels = {"kind": kind, "outcome": outcome}
        return (sample(text, "studio_bfl_request_seconds_count", **labels) or 0) - (
            sample(before, "studio_bfl_request_seconds_count", **labels) or 0
        )

    assert grew("submit", "http_429") == 1
    assert grew("poll", "ok") == 1
    assert grew("credits", "ok") == 1


def test_metrics_refuse_other_hosts_when_no_token_is_set(client_factory: ClientFactory) -> None:
    assert client_factory("127.0.0.1").get("/metrics").status_code == 200
    assert client_factory("::1").get("/metrics").status_code == 200
    refused = client_factory("203.0.113.9").get("/metrics")
    assert refused.status_code == 403
    assert "METRICS_TOKEN" in refused.text
    assert "studio_jobs" not in refused.text


def test_metrics_token_is_required_from_everywhere_once_set(
    metrics_token: str, client_factory: ClientFactory
) -> None:
    remote = client_factory("203.0.113.9")
    local = client_factory("127.0.0.1")
    assert local.get("/metrics").status_code == 401
    assert remote.get("/metrics").status_code == 401
    wrong = remote.get("/metrics", headers={"Authorization": "Bearer not-the-token"})
    assert wrong.status_code == 401
    assert wrong.headers["www-authenticate"].startswith("Bearer")
    ok = remote.get("/metrics", headers={"Authorization": f"Bearer {metrics_token}"})
    assert ok.status_code == 200
    assert "studio_queue_depth" in ok.text


_RECORD_IN_ANOTHER_PROCESS = textwrap.dedent(
    """
    import sys
    from app.ops import metrics
    for _ in range(int(sys.argv[1])):
        metrics.job_transition("queued", "submitting", "multiprocess-test")
    metrics.observe_bfl_request("submit", 0.2, "ok")
    metrics.mark_process_dead()
    """
)


@pytest.mark.slow
def test_one_scrape_counts_samples_of_every_process(tmp_path: Path) -> None:
    """Worker processes record, the web process serves: the scrape adds them all up."""
    samples_dir = tmp_path / "metrics"
    samples_dir.mkdir()
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(samples_dir))
    for count in (3, 4):
        subprocess.run(
            [sys.executable, "-c", _RECORD_IN_ANOTHER_PROCESS, str(count)],
            env=env,
            cwd=ROOT,
            check=True,
            timeout=60,
        )
    port = free_port()
    with WebProcess(env, port) as web:
        text = httpx.get(f"http://127.0.0.1:{web.port}/metrics", timeout=10).text

    labels = {"from_status": "queued", "to_status": "submitting", "model": "multiprocess-test"}
    assert sample(text, "studio_job_transitions_total", **labels) == 7
    assert sample(text, "studio_bfl_request_seconds_count", kind="submit", outcome="ok") == 2
    assert sample(text, "studio_database_up") == 1


def test_worker_metrics_server_serves_process_samples_with_the_same_protection(
    metrics_token: str,
) -> None:
    metrics.job_transition("pending", "failed", "worker-server-test")
    server = metrics.start_metrics_server(free_port(), host="127.0.0.1")
    try:
        url = f"http://127.0.0.1:{server.server_port}/metrics"
        assert httpx.get(url, timeout=5).status_code == 401
        ok = httpx.get(url, headers={"Authorization": f"Bearer {metrics_token}"}, timeout=5)
    finally:
        server.shutdown()
        server.server_close()
    assert ok.status_code == 200
    labels = {"from_status": "pending", "to_status": "failed", "model": "worker-server-test"}
    assert (sample(ok.text, "studio_job_transitions_total", **labels) or 0) >= 1
    # Studio-wide figures come from the web app only, so they are not scraped twice.
    assert "studio_queue_depth" not in ok.text
