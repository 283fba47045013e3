"""The one Celery application, configured from the studio's settings."""

from __future__ import annotations

from celery import Celery

from app.settings import get_settings


def create_celery() -> Celery:
    settings = get_settings()
    celery = Celery("flux_studio", broker=settings.redis_url, include=["worker.tasks"])
    transport: dict[str, object] = {
        # Countdowns stay far below this, so nothing is redelivered while it waits.
        "visibility_timeout": 3600,
    }
    if settings.CELERY_KEY_PREFIX:
        transport["global_keyprefix"] = settings.CELERY_KEY_PREFIX
    celery.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_backend=None,
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_time_limit=120,
        task_soft_time_limit=100,
        broker_transport_options=transport,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        timezone="UTC",
        beat_schedule={},
    )
    return celery


app = create_celery()
