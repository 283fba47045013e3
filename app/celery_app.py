"""The one Celery application, configured from the studio's settings."""

from __future__ import annotations

from typing import Any

from celery import Celery, signals
from celery.schedules import crontab
from kombu import Queue

from app.alerts import EVALUATE_ALERTS_TASK, WEEKLY_DIGEST_TASK
from app.api.idempotency import PURGE_KEYS_TASK
from app.auth import PURGE_SESSIONS_TASK
from app.costs import REFRESH_CREDIT_BALANCE_TASK
from app.jobs import (
    DISPATCH_QUEUE,
    MAX_COUNTDOWN_S,
    POLL,
    POLL_QUEUE,
    PURGE_REFERENCES,
    RESTART_OVERDUE_POLLS,
    SUBMIT_NEXT,
    SWEEP,
)
from app.ops import celery_hooks
from app.settings import Settings, get_settings

#: Seconds Redis lets a delivered message go unacknowledged before handing it out again.
VISIBILITY_TIMEOUT_S = 3600
assert MAX_COUNTDOWN_S * 10 <= VISIBILITY_TIMEOUT_S, "countdowns must stay far below it"


def create_celery() -> Celery:
    """The studio's Celery app: Redis broker, late acks, polls before wake-ups, beat's schedule."""
    celery = Celery(
        "flux_studio",
        include=["worker.tasks", "worker.auth_tasks", "worker.api_tasks", "worker.alert_tasks"],
    )
    # Read when the app is first used, not when this module is imported: the job modules
    # import it to send messages, and importing them must not need REDIS_URL yet.
    celery.add_defaults(lambda: _configuration(get_settings()))
    # Structured logs, per-task log context, heartbeats and metrics cleanup (app/ops).
    celery_hooks.install()

    def refresh_credits_at_start(**_: Any) -> None:
        # Beat's first scheduled refresh comes one interval after it starts (and its schedule
        # file remembers the last run across restarts): read the balance at once instead, so
        # the dashboard does not stay empty for minutes after a (re)start.
        celery.send_task(
            REFRESH_CREDIT_BALANCE_TASK, expires=get_settings().CREDIT_REFRESH_INTERVAL_S
        )

    signals.beat_init.connect(refresh_credits_at_start, weak=False)
    return celery


def _configuration(settings: Settings) -> dict[str, Any]:
    return dict(
        broker_url=settings.redis_url,
        task_serializer="json",
        accept_content=["json"],
        result_backend=None,
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_time_limit=120,
        task_soft_time_limit=100,
        broker_transport_options=_transport_options(settings),
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        timezone="UTC",
        # Wake-ups and polls on their own queues: a burst of wake-ups for a big batch does
        # not delay polls of images that are ready. A worker consumes every queue here,
        # polls first (see queue_order_strategy).
        task_default_queue="celery",
        task_queues=(Queue(POLL_QUEUE), Queue(DISPATCH_QUEUE), Queue("celery")),
        task_routes={
            SUBMIT_NEXT: {"queue": DISPATCH_QUEUE},
            SWEEP: {"queue": DISPATCH_QUEUE},
            RESTART_OVERDUE_POLLS: {"queue": DISPATCH_QUEUE},
            POLL: {"queue": POLL_QUEUE},
        },
        beat_schedule=_beat_schedule(settings),
    )


def _transport_options(settings: Settings) -> dict[str, object]:
    transport: dict[str, object] = {
        # Every countdown is capped at MAX_COUNTDOWN_S (app/jobs/__init__.py), far below
        # this, so nothing is redelivered while it waits; longer waits live in PostgreSQL.
        "visibility_timeout": VISIBILITY_TIMEOUT_S,
        # A worker with a free slot takes from the first non-empty queue of `task_queues`,
        # in that order, instead of taking turns: a poll (a webhook's, or one due now) is not
        # kept waiting by the wake-ups a big batch sends. Polls cannot starve the others:
        # there is at most one due per job at BFL.
        "queue_order_strategy": "priority",
    }
    if settings.CELERY_KEY_PREFIX:
        transport["global_keyprefix"] = settings.CELERY_KEY_PREFIX
    return transport


def _beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    schedule = _fixed_schedule(settings)
    if settings.PUBLIC_URL:
        # Webhooks on: no poll message per job; this finds the polls whose webhook never came.
        schedule["restart-overdue-polls"] = {
            "task": RESTART_OVERDUE_POLLS,
            "schedule": settings.POLL_MAX_INTERVAL_S,
            "options": {"expires": settings.POLL_MAX_INTERVAL_S},
        }
    return schedule


def _fixed_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    return {
        "sweep-jobs": {
            "task": SWEEP,
            "schedule": settings.SWEEP_INTERVAL_S,
            # A sweep that waited longer than one interval is superseded by the next.
            "options": {"expires": settings.SWEEP_INTERVAL_S},
        },
        # Cost review: the credit balance shown on the cost dashboard.
        "refresh-credit-balance": {
            "task": REFRESH_CREDIT_BALANCE_TASK,
            "schedule": settings.CREDIT_REFRESH_INTERVAL_S,
            "options": {"expires": settings.CREDIT_REFRESH_INTERVAL_S},
        },
        # The API's idempotency keys past their lifetime.
        "purge-idempotency-keys": {
            "task": PURGE_KEYS_TASK,
            "schedule": 3600,
            "options": {"expires": 3600},
        },
        # Reference images no job uses (uploads never queued) after their grace period.
        "purge-unused-references": {
            "task": PURGE_REFERENCES,
            "schedule": 3600,
            "options": {"expires": 3600},
        },
        # Alerts: budget thresholds, the credit runway, failure bursts; undelivered retries.
        "evaluate-alerts": {
            "task": EVALUATE_ALERTS_TASK,
            "schedule": settings.ALERT_EVALUATE_INTERVAL_S,
            "options": {"expires": settings.ALERT_EVALUATE_INTERVAL_S},
        },
        # The weekly spend digest (once per ISO week per team, however often it runs).
        "weekly-digest": {
            "task": WEEKLY_DIGEST_TASK,
            "schedule": crontab(
                minute=0, hour=settings.DIGEST_HOUR_UTC, day_of_week=settings.DIGEST_WEEKDAY
            ),
        },
        # Accounts: delete sessions past their idle or absolute timeout.
        "purge-ended-sessions": {
            "task": PURGE_SESSIONS_TASK,
            "schedule": 3600,
            "options": {"expires": 3600},
        },
    }


app = create_celery()
