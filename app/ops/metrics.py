"""Prometheus metrics: counters and histograms that web and worker processes record, and figures
read from Postgres at scrape time.

Every process of a studio writes its samples to PROMETHEUS_MULTIPROC_DIR (prometheus-client's
multiprocess mode), so one scrape of /metrics counts the web app and every worker child alike.
Figures that Postgres knows exactly (jobs by state, queue depth, active tasks, credits spent) are
not counted in processes at all: a query at scrape time cannot drift, double-count or reset.
"""

from __future__ import annotations

import ipaddress
import os
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any
from wsgiref.simple_server import WSGIServer

import httpx
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    multiprocess,
)
from prometheus_client import generate_latest as _generate_latest
from prometheus_client.core import Metric
from prometheus_client.registry import Collector
from sqlalchemy import event
from sqlalchemy.orm import Session

from app.security import constant_time_equal
from app.settings import get_settings

__all__ = [
    "CONTENT_TYPE_LATEST",
    "MeasuredTransport",
    "bfl_call",
    "job_changed",
    "job_transition",
    "mark_process_dead",
    "multiprocess_dir",
    "observe_bfl_request",
    "observe_http_request",
    "observe_ready_to_stored",
    "render_metrics",
]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# `*_created` samples exist only outside multiprocess mode; leave them out everywhere so a scrape
# looks the same with one process or many.
disable_created_metrics()

# BFL answers a submit in well under a second and a poll faster; downloads take longer.
_BFL_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_STORE_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
_HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)

BFL_REQUEST_SECONDS = Histogram(
    "studio_bfl_request_seconds",
    "Duration of calls to BFL's API by kind (submit, poll, download, credits) and outcome.",
    ["kind", "outcome"],
    buckets=_BFL_BUCKETS,
)
BFL_REQUEST_ERRORS = Counter(
    "studio_bfl_request_errors_total",
    "Failed calls to BFL's API by kind and error class (the BFLError code).",
    ["kind", "error"],
)
JOB_TRANSITIONS = Counter(
    "studio_job_transitions_total",
    "Job state changes made by this studio, by previous state, new state and model.",
    ["from_status", "to_status", "model"],
)
READY_TO_STORED_SECONDS = Histogram(
    "studio_job_ready_to_stored_seconds",
    "Time from BFL reporting a job Ready to its image being stored under our own key.",
    buckets=_STORE_BUCKETS,
)
HTTP_REQUEST_SECONDS = Histogram(
    "studio_http_request_seconds",
    "Web requests by method, route template and status class.",
    ["method", "route", "status"],
    buckets=_HTTP_BUCKETS,
)


def multiprocess_dir() -> str | None:
    """The shared samples folder when multiprocess mode is on, else None."""
    path = os.environ.get(MULTIPROC_ENV)
    return path if path and os.path.isdir(path) else None


# --- recording (call these from the web app and the worker) -----------------------------------


def observe_bfl_request(kind: str, seconds: float, outcome: str = "ok") -> None:
    """Record one call to BFL. `outcome` is "ok" or the error's stable code (BFLError.code)."""
    BFL_REQUEST_SECONDS.labels(kind=kind, outcome=outcome).observe(max(0.0, seconds))
    if outcome != "ok":
        BFL_REQUEST_ERRORS.labels(kind=kind, error=outcome).inc()


@contextmanager
def bfl_call(kind: str) -> Iterator[None]:
    """Time a BFL call and record its outcome: `with bfl_call("submit"): client.submit(...)`.

    Any exception is recorded by its `code` attribute (every BFLError has one) or its class name,
    and re-raised untouched.
    """
    started = time.perf_counter()
    try:
        yield
    except BaseException as exc:
        outcome = getattr(exc, "code", None)
        if not isinstance(outcome, str) or not outcome:
            outcome = type(exc).__name__
        observe_bfl_request(kind, time.perf_counter() - started, outcome)
        raise
    observe_bfl_request(kind, time.perf_counter() - started, "ok")


class MeasuredTransport(httpx.BaseTransport):
    """An httpx transport that times every call to BFL and counts failures by class.

    Give it to the BFL client (`BFLClient(..., transport=MeasuredTransport())`): every request,
    redirect hop and polling fallback is measured where it happens, without touching the client.
    The kind comes from the URL (submit, poll, credits, download); the outcome is "ok" for any
    answer below 400, `http_<status>` (429, 4xx, 5xx) otherwise, or the exception's class name
    when no answer came.
    """

    def __init__(self, inner: httpx.BaseTransport | None = None) -> None:
        self.inner = inner or httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        kind = bfl_request_kind(request.method, request.url.path)
        started = time.perf_counter()
        try:
            response = self.inner.handle_request(request)
        except Exception as exc:
            observe_bfl_request(kind, time.perf_counter() - started, type(exc).__name__)
            raise
        status = response.status_code
        if status < 400:
            outcome = "ok"
        elif status == 429 or status >= 500:
            outcome = f"http_{status}"
        else:
            outcome = "http_4xx"
        observe_bfl_request(kind, time.perf_counter() - started, outcome)
        return response

    def close(self) -> None:
        self.inner.close()


def bfl_request_kind(method: str, path: str) -> str:
    """What a BFL call does, from its method and path (kept to a few label values)."""
    if method.upper() == "POST":
        return "submit"
    if path.endswith("/get_result") or "/regional/" in path or "/get_result" in path:
        return "poll"
    if path.endswith("/v1/credits"):
        return "credits"
    return "download"


def job_transition(from_status: str, to_status: str, model: str) -> None:
    """Count one job state change; call it right after the guarded UPDATE succeeded."""
    JOB_TRANSITIONS.labels(
        from_status=str(from_status), to_status=str(to_status), model=str(model)
    ).inc()


_PENDING_CHANGES = "ops.job_changes"


def job_changed(db: Session, job: Any, from_status: str) -> None:
    """Count a job's state change once `db` commits (a rollback drops it).

    Call it right after a guarded UPDATE moved `job` out of `from_status`. A job that reached
    `ready` with `bfl_ready_at` and `finished_at` set also records its Ready-to-stored time.
    """
    change = (str(from_status), str(job.status), str(job.model))
    ready_at, finished_at = getattr(job, "bfl_ready_at", None), getattr(job, "finished_at", None)
    stored_s = None
    if change[1] == "ready" and ready_at is not None and finished_at is not None:
        stored_s = (finished_at - ready_at).total_seconds()
    db.info.setdefault(_PENDING_CHANGES, []).append((change, stored_s))


@event.listens_for(Session, "after_commit")
def _record_committed_changes(session: Session) -> None:
    for (from_status, to_status, model), stored_s in session.info.pop(_PENDING_CHANGES, ()):
        job_transition(from_status, to_status, model)
        if stored_s is not None:
            observe_ready_to_stored(stored_s)


@event.listens_for(Session, "after_soft_rollback")
def _drop_rolled_back_changes(session: Session, previous_transaction: Any) -> None:
    # Soft: also a rolled-back savepoint, whose changes never happened either.
    session.info.pop(_PENDING_CHANGES, None)


def observe_ready_to_stored(seconds: float) -> None:
    """Record how long a Ready job's image took to reach our storage."""
    READY_TO_STORED_SECONDS.observe(max(0.0, seconds))


def observe_http_request(method: str, route: str, status: int, seconds: float) -> None:
    HTTP_REQUEST_SECONDS.labels(method=method, route=route, status=f"{status // 100}xx").observe(
        max(0.0, seconds)
    )


def mark_process_dead(pid: int | None = None) -> None:
    """Tell multiprocess mode a process has exited, so its live gauges stop counting."""
    if multiprocess_dir() is not None:
        multiprocess.mark_process_dead(pid if pid is not None else os.getpid())


class _ThisProcess(Collector):
    """The in-process registry, when multiprocess mode is off (a single process, tests)."""

    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()


def render_metrics(*extra: Collector) -> bytes:
    """The Prometheus text exposition of every process's samples, plus `extra` collectors'
    (the web app adds the studio's figures from Postgres, app/ops/figures.py)."""
    registry = CollectorRegistry(auto_describe=False)
    if multiprocess_dir() is not None:
        multiprocess.MultiProcessCollector(registry)
    else:
        registry.register(_ThisProcess())
    for collector in extra:
        registry.register(collector)
    return _generate_latest(registry)


def scrape_refusal(authorization: str, client_host: str | None) -> tuple[int, str] | None:
    """Why a scrape is refused (status, message), or None when it may proceed.

    With METRICS_TOKEN set, only `Authorization: Bearer <token>` passes, from anywhere; unset,
    only loopback clients may scrape.
    """
    token = get_settings().METRICS_TOKEN
    if token is not None and token.get_secret_value():
        scheme, _, sent = authorization.partition(" ")
        if scheme.lower() == "bearer" and constant_time_equal(
            sent.strip(), token.get_secret_value()
        ):
            return None
        return 401, "Send the METRICS_TOKEN as 'Authorization: Bearer <token>'.\n"
    if _is_loopback(client_host):
        return None
    return (
        403,
        "Metrics are served to loopback clients only; set METRICS_TOKEN to scrape from "
        "another host.\n",
    )


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def start_metrics_server(port: int, host: str = "0.0.0.0") -> WSGIServer:  # noqa: S104
    """Serve this host's process samples on http://host:port/metrics from a daemon thread.

    For workers on hosts of their own, whose samples the web app cannot read; the studio-wide
    figures from Postgres stay on the web app's /metrics, so they are not scraped twice.
    """
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return None  # scrapes would flood the log

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        if environ.get("PATH_INFO") != "/metrics":
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"Only /metrics is served here.\n"]
        refusal = scrape_refusal(environ.get("HTTP_AUTHORIZATION", ""), environ.get("REMOTE_ADDR"))
        if refusal is not None:
            status, message = refusal
            headers = [("Content-Type", "text/plain")]
            if status == 401:
                headers.append(("WWW-Authenticate", 'Bearer realm="metrics"'))
            start_response(f"{status} {'Unauthorized' if status == 401 else 'Forbidden'}", headers)
            return [message.encode()]
        start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST)])
        return [render_metrics()]

    server = make_server(host, port, app, handler_class=QuietHandler)
    threading.Thread(target=server.serve_forever, name="metrics-server", daemon=True).start()
    return server
