"""Celery task entry points; each is a thin wrapper around a service in app/."""

from __future__ import annotations

import logging
import uuid

import httpx
from celery.signals import worker_process_init, worker_process_shutdown
from sqlalchemy.orm import configure_mappers

from app.bfl.client import BFLClient
from app.bfl.errors import BFLError
from app.celery_app import app
from app.costs import REFRESH_CREDIT_BALANCE_TASK
from app.costs import service as costs_service
from app.db import get_sessionmaker, session_scope
from app.jobs import PURGE_REFERENCES, dispatch, polling, references, results, sweeper
from app.jobs.messages import POLL, RESTART_OVERDUE_POLLS, SUBMIT_NEXT, SWEEP
from app.ops.metrics import MeasuredTransport
from app.ops.warm_up import connect_ahead
from app.settings import get_settings

log = logging.getLogger(__name__)
_client: BFLClient | None = None


def bfl_client() -> BFLClient:
    """This process's BFL client, made on first use (after the worker forked)."""
    global _client
    if _client is None:
        settings = get_settings()
        _client = BFLClient(
            settings.bfl_base_url,
            settings.bfl_key,
            # Times every BFL call and counts failures by class for /metrics.
            transport=MeasuredTransport(),
            timeout=httpx.Timeout(
                connect=settings.BFL_CONNECT_TIMEOUT_S,
                read=settings.BFL_TIMEOUT_S,
                write=settings.BFL_TIMEOUT_S,
                pool=settings.BFL_CONNECT_TIMEOUT_S,
            ),
            allow_insecure_urls=settings.bfl_emulated,
            # The key goes to the API host and these BFL hosts only, never to whatever host a
            # polling_url names.
            allowed_hosts=settings.bfl_allowed_hosts,
            # Below the task's soft time limit, so a slow download ends as a retryable error.
            download_deadline_s=60.0,
        )
    return _client


@worker_process_init.connect
def _warm_up(**_: object) -> None:
    # A pool process pays its one-time costs (the HTTP client's TLS context, image codecs,
    # the database engine, the ORM's mapper set-up, a connection to PostgreSQL and one to the
    # broker) here rather than in its first tasks, which would otherwise all come at once, on
    # every pool process, when a batch is queued or its first results arrive together. BFL is
    # not contacted.
    try:
        bfl_client()
        get_sessionmaker()
        configure_mappers()
        results.warm_up_imaging()
    except Exception:
        log.exception("warming up the worker process failed; its first tasks will do it")
        return
    connect_ahead("task")


@worker_process_shutdown.connect
def _close_client(**_: object) -> None:
    if _client is not None:
        _client.close()


#: A submission may wait out a PostgreSQL outage before its accepted answer is written (up to
#: ANSWER_DB_RETRY_MINUTES): its time limits grow by that much over the default ones.
_ANSWER_WAIT_S = get_settings().ANSWER_DB_RETRY_MINUTES * 60


@app.task(
    name=SUBMIT_NEXT,
    soft_time_limit=app.conf.task_soft_time_limit + _ANSWER_WAIT_S,
    time_limit=app.conf.task_time_limit + _ANSWER_WAIT_S,
)
def submit_next() -> str:
    """Wake-up: submit the fairest queued job if the active-task cap has room."""
    return dispatch.submit_next(bfl_client()).value


@app.task(name=POLL)
def poll(job_id: str, force: bool = False, at: float | None = None, hand_on: bool = False) -> str:
    """Poll one job's BFL task if due (or at once, for a webhook); a no-op if it moved on.

    `at`: the moment (Unix seconds) to ask BFL, for a message delivered just ahead of it;
    `hand_on`: the task should be finished by then (see app.jobs.polling.poll_job)."""
    job = uuid.UUID(job_id)
    return polling.poll_job(bfl_client(), job, force=force, at=at, hand_on=hand_on).value


@app.task(name=SWEEP)
def sweep() -> dict[str, int]:
    """Recover stuck and orphaned jobs (celery beat runs this every SWEEP_INTERVAL_S)."""
    return sweeper.sweep().as_dict()


@app.task(name=RESTART_OVERDUE_POLLS)
def restart_overdue_polls() -> int:
    """Polls whose webhook never came (beat runs this every POLL_MAX_INTERVAL_S with webhooks)."""
    return sweeper.restart_overdue_polls()


# --- Cost review (app/costs): the account's credit balance, refreshed by beat. ---------------


@app.task(name=REFRESH_CREDIT_BALANCE_TASK)
def refresh_credit_balance() -> str:
    """Store the BFL account's credit balance (beat runs this every CREDIT_REFRESH_INTERVAL_S)."""
    try:
        with session_scope() as db:
            return str(costs_service.refresh_credit_balance(db, bfl_client()).credits)
    except BFLError as exc:
        # The dashboard keeps showing the last reading with its time; the next run tries again.
        log.warning("could not read the BFL credit balance: %s", exc)
        return "unavailable"


@app.task(name=PURGE_REFERENCES)
def purge_references() -> int:
    """Remove reference images no job uses, past their grace period (beat runs this hourly)."""
    removed = references.purge_unused_references()
    if removed:
        log.info("removed %d unused reference objects", removed)
    return removed
