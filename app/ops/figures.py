"""The studio-wide figures Postgres knows exactly, as Prometheus metrics read at scrape time.

Served on the web app's /metrics only (app/ops/routes.py), so they are not scraped twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from decimal import Decimal

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from app.ops import service


class StudioCollector(Collector):
    """Jobs by state and model, queue depth, active tasks against the cap, credits and workers."""

    def collect(self) -> Iterable[Metric]:
        up = GaugeMetricFamily(
            "studio_database_up", "1 when the scrape could read the studio's figures from Postgres."
        )
        try:
            figures = service.scrape_figures()
        except Exception:
            # A scrape must still answer (process metrics, this gauge) when Postgres is down.
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up

        yield from _job_metrics(figures)
        yield from _account_metrics(figures)
        yield from _ledger_metrics(figures)


def _job_metrics(figures: service.ScrapeFigures) -> Iterator[Metric]:
    """Jobs by state and model, and the queue's depth and oldest age."""
    jobs = GaugeMetricFamily(
        "studio_jobs", "Jobs in Postgres by state and model.", labels=["status", "model"]
    )
    for (status, model), count in sorted(figures.jobs_by_status_model.items()):
        jobs.add_metric([status, model], count)
    yield jobs
    yield _gauge(
        "studio_queue_depth", "Jobs queued in Postgres, waiting for a slot.", figures.queued
    )
    yield _gauge(
        "studio_queue_oldest_age_seconds",
        "Age of the longest-waiting queued job (0 when none waits).",
        figures.oldest_queued_age_s,
    )


def _account_metrics(figures: service.ScrapeFigures) -> Iterator[Metric]:
    """The BFL account's slots, caps, outage and rate-limit state."""
    yield _gauge(
        "studio_bfl_active_tasks",
        "Jobs submitting or pending at BFL: the slots of the account's cap in use.",
        figures.active,
    )
    yield _gauge(
        "studio_bfl_active_tasks_cap",
        "The account's cap on active BFL tasks (BFL_MAX_ACTIVE_TASKS).",
        figures.cap,
    )
    yield _gauge(
        "studio_bfl_effective_cap",
        "The cap the dispatcher uses: BFL_MAX_ACTIVE_TASKS, or lower as learned from 429s.",
        figures.effective_cap,
    )
    yield _gauge(
        "studio_bfl_outage",
        "1 while BFL is unreachable for the account and nothing is sent, else 0.",
        int(figures.bfl_outage),
    )
    yield _gauge(
        "studio_bfl_rate_limited",
        "1 while a 429 (or X-RateLimit-Remaining 0) pauses sending, else 0.",
        int(figures.bfl_rate_limited),
    )


def _ledger_metrics(figures: service.ScrapeFigures) -> Iterator[Metric]:
    """Credits spent by model, the account's balance and the live workers."""
    spent = CounterMetricFamily(
        "studio_credits_spent",
        "BFL credits charged, from the studio's ledger, by model.",
        labels=["model"],
    )
    for model, credits in sorted(figures.credits_by_model.items()):
        spent.add_metric([model], float(credits))
    yield spent
    if figures.credit_balance is not None:
        yield _gauge(
            "studio_bfl_credit_balance",
            "The BFL account's credit balance as last read.",
            figures.credit_balance,
        )
    if figures.workers_alive is not None:
        yield _gauge(
            "studio_workers_alive",
            "Celery workers whose heartbeat is fresh in Redis.",
            figures.workers_alive,
        )


def _gauge(name: str, documentation: str, value: float | int | Decimal) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation)
    family.add_metric([], float(value))
    return family
