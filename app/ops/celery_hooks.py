"""Celery signal receivers: structured logs, log context per task, heartbeats, metrics cleanup.

`install()` is called once where the Celery app is built; every worker and beat process then
logs through app.ops.logs, binds `task`, `task_id`, `job_id` and the web request's `request_id`
to each task's lines, beats in Redis while alive, and tells the metrics store when a pool
child exits. Metrics are imported only inside a running worker, so a `celery inspect` probe
leaves no samples behind.
"""

from __future__ import annotations

import sys
import uuid
from typing import Any

from celery import signals

from app.ops.heartbeat import Heartbeat
from app.ops.logs import bind_context, clear_context, configure_logging, current_context
from app.settings import get_settings

#: Message headers carrying the publisher's log context to the task.
REQUEST_ID_HEADER = "studio_request_id"
JOB_ID_HEADER = "studio_job_id"

_installed = False
_heartbeat: Heartbeat | None = None
_worker_identity: dict[str, Any] = {}


def _process_role() -> str:
    return "beat" if "beat" in sys.argv else "worker"


def _on_setup_logging(**_: Any) -> None:
    # Connecting this signal at all stops Celery from installing its own handlers.
    configure_logging(_process_role())


def _on_before_publish(headers: dict[str, Any] | None = None, **_: Any) -> None:
    if headers is None:
        return
    context = current_context()
    if "request_id" in context:
        headers.setdefault(REQUEST_ID_HEADER, str(context["request_id"]))
    if "job_id" in context:
        headers.setdefault(JOB_ID_HEADER, str(context["job_id"]))


def _job_id_from(args: Any, kwargs: Any) -> str | None:
    if isinstance(kwargs, dict) and kwargs.get("job_id"):
        return str(kwargs["job_id"])
    # Tasks take a job id as their first argument by convention.
    if isinstance(args, list | tuple) and args and isinstance(args[0], str):
        try:
            return str(uuid.UUID(args[0]))
        except ValueError:
            return None
    return None


def _on_task_prerun(
    task_id: str | None = None,
    task: Any = None,
    args: Any = None,
    kwargs: Any = None,
    **_: Any,
) -> None:
    clear_context()
    context: dict[str, Any] = {"task_id": task_id or "", "task": getattr(task, "name", "")}
    request = getattr(task, "request", None)
    request_id = getattr(request, REQUEST_ID_HEADER, None) if request is not None else None
    if request_id:
        context["request_id"] = request_id
    job_id = _job_id_from(args, kwargs) or (
        getattr(request, JOB_ID_HEADER, None) if request is not None else None
    )
    if job_id:
        context["job_id"] = job_id
    bind_context(**context)


def _on_task_postrun(**_: Any) -> None:
    clear_context()


def _on_after_setup(sender: Any = None, instance: Any = None, **_: Any) -> None:
    _worker_identity["hostname"] = str(sender) if sender else None
    _worker_identity["concurrency"] = int(getattr(instance, "concurrency", 0) or 0)


def _on_worker_ready(sender: Any = None, **_: Any) -> None:
    global _heartbeat
    # The Celery node name (`studio worker` makes it unique: studio-worker-<pid>@<host>).
    name = _worker_identity.get("hostname") or getattr(sender, "hostname", None)
    _heartbeat = Heartbeat(
        "worker", name=name, concurrency=_worker_identity.get("concurrency", 0)
    ).start()
    port = get_settings().WORKER_METRICS_PORT
    if port:
        from app.ops import metrics

        metrics.start_metrics_server(port)


def _on_worker_shutdown(**_: Any) -> None:
    if _heartbeat is not None:
        _heartbeat.stop()


def _on_process_shutdown(pid: int | None = None, **_: Any) -> None:
    from app.ops import metrics

    metrics.mark_process_dead(pid)


def _on_beat_init(sender: Any = None, **_: Any) -> None:
    global _heartbeat
    _heartbeat = Heartbeat("beat").start()


def install() -> None:
    """Connect the receivers (once per process)."""
    global _installed
    if _installed:
        return
    signals.setup_logging.connect(_on_setup_logging, weak=False)
    signals.before_task_publish.connect(_on_before_publish, weak=False)
    signals.task_prerun.connect(_on_task_prerun, weak=False)
    signals.task_postrun.connect(_on_task_postrun, weak=False)
    signals.celeryd_after_setup.connect(_on_after_setup, weak=False)
    signals.worker_ready.connect(_on_worker_ready, weak=False)
    signals.worker_shutdown.connect(_on_worker_shutdown, weak=False)
    signals.worker_process_shutdown.connect(_on_process_shutdown, weak=False)
    signals.beat_init.connect(_on_beat_init, weak=False)
    _installed = True
