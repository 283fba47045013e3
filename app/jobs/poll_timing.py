"""When to poll a BFL task: learnt from the run times BFL reports, and from its `progress`.

Kept apart from the polling itself so the submission (which schedules the first poll) and the
poll (which schedules the next) share it without importing each other.
"""

from __future__ import annotations

from app.settings import Settings

#: Shortest wait between polls when BFL's progress says the task is about to finish.
_NEAR_FINISH_FLOOR_S = 0.05
#: How far after BFL's predicted finish a poll is aimed: absorbs the rounding of `progress`.
_FINISH_MARGIN_S = 0.02
#: How far after the usual finish the first poll is aimed. It counts from our receipt of BFL's
#: answer, which comes after BFL started the task; the poll waits for its moment in-process
#: (POLL_LEAD_S), so this only absorbs the precision of that wait.
_FIRST_POLL_MARGIN_S = 0.003
#: How long before a poll's moment its message is delivered: it covers the broker's timer,
#: a busy pool and the poll's lease (measured 10-25 ms on two busy cores), and the poll then
#: waits in-process until its moment.
POLL_LEAD_S = 0.04
#: How much each finished task moves the learned run time of its model (a moving average).
_LEARNING_RATE = 0.2
#: The spread assumed after one run of a model, as a fraction of that run's time.
_PRIOR_SPREAD = 0.001
#: Run times whose two mean deviations stay within this fraction of their mean are steady
#: enough to poll at the predicted finish and claim the next job ahead of it.
_STEADY_SPREAD = 0.02
#: BFL's run time per model as this process saw it: (mean, mean absolute deviation), seconds.
_run_times: dict[str, tuple[float, float]] = {}
#: With webhooks on, how long after BFL's predicted finish the fallback poll comes: the
#: webhook's poll normally gets there first, and a lost webhook costs about this much.
WEBHOOK_GRACE_S = 1.0


def observe_run_time(model: str, seconds: float) -> None:
    """Learn how long BFL takes for `model` from one finished task's run (`seconds`, as BFL
    reported it: a time we measured ourselves includes our own lateness and would drift)."""
    if not 0.0 < seconds < 3600.0:
        return
    seen = _run_times.get(model)
    if seen is None:
        # A small prior spread: steady run times make it vanish within a few tasks, so their
        # first poll comes right after the finish; run times that vary make it grow at once.
        _run_times[model] = (seconds, _PRIOR_SPREAD * seconds)
        return
    mean, deviation = seen
    deviation += _LEARNING_RATE * (abs(seconds - mean) - deviation)
    mean += _LEARNING_RATE * (seconds - mean)
    _run_times[model] = (mean, deviation)


def finish_is_predictable(model: str | None) -> bool:
    """Whether this process can tell when a task of `model` will finish: its run times, as
    BFL reported them, vary by less than _STEADY_SPREAD (two mean deviations of the mean)."""
    seen = _run_times.get(model or "")
    return seen is not None and 2.0 * seen[1] <= _STEADY_SPREAD * seen[0]


def first_poll_is_timed(settings: Settings, model: str | None = None) -> bool:
    """Whether a task's first poll is sent for a moment (`first_poll_delay`): always without
    webhooks; with them only when the finish is predictable, since a poll at the moment BFL
    finishes sees it sooner than BFL's call (a hop through the web process and the broker)."""
    return not webhooks_enabled(settings) or finish_is_predictable(model)


def first_poll_delay(settings: Settings, model: str | None = None) -> float:
    """Seconds from BFL accepting a task to its first poll.

    It comes when the task is likely done, by the run times BFL reported to this process for
    the model: just after the usual finish when they hardly vary (one poll finds it Ready),
    two deviations before it when they do (that poll's `progress` then places the next one
    just after the finish). POLL_MIN_INTERVAL_S for a model not seen yet. With webhooks and a
    finish that is not predictable, it is only the fallback for a call that never comes
    (POLL_MAX_INTERVAL_S).
    """
    if not first_poll_is_timed(settings, model):
        return settings.POLL_MAX_INTERVAL_S
    seen = _run_times.get(model or "")
    if seen is None:
        return settings.POLL_MIN_INTERVAL_S
    mean, deviation = seen
    aim = mean - 2.0 * deviation + _FIRST_POLL_MARGIN_S
    return max(_NEAR_FINISH_FLOOR_S, min(settings.POLL_MAX_INTERVAL_S, aim))


def webhooks_enabled(settings: Settings) -> bool:
    """Whether submissions carry our webhook URL, so BFL calls us when a task ends."""
    return bool(settings.PUBLIC_URL)


def next_poll_delay(
    settings: Settings,
    *,
    elapsed: float,
    poll_count: int,
    progress: float | None,
    webhooks: bool = False,
) -> float:
    """Seconds until the next poll of a task that has run `elapsed` seconds.

    With BFL's progress, aim just after the predicted finish (a little late beats one more
    poll); without it, grow from the minimum but never wait longer than a quarter of the time
    spent so far, so a result waits at most ~25 % of its run time before we see it.

    With `webhooks`, BFL's call starts the poll that finishes the job, and a scheduled poll is
    only the fallback for a call that never comes: it is due WEBHOOK_GRACE_S after the
    predicted finish (or POLL_MAX_INTERVAL_S without a prediction), so it seldom races the
    webhook's poll and the two do not both poll and download every result. A finish predicted
    within WEBHOOK_GRACE_S is polled just after it, as without webhooks: BFL's call may have
    come while this poll held the job, and was then not followed.
    """
    low, high = (
        settings.POLL_MIN_INTERVAL_S,
        max(settings.POLL_MIN_INTERVAL_S, settings.POLL_MAX_INTERVAL_S),
    )
    remaining: float | None = None
    if progress is not None and 0.0 < progress < 1.0 and elapsed > 0:
        # Progress is a fraction of the run: the rest takes elapsed * (1 - p) / p.
        remaining = elapsed * (1.0 - progress) / progress
    if webhooks and (remaining is None or remaining > WEBHOOK_GRACE_S):
        return high if remaining is None else max(low, min(high, remaining + WEBHOOK_GRACE_S))
    if remaining is not None:
        # Aiming one per cent late absorbs rounding in the reported progress; when the finish
        # is predicted sooner than the usual minimum, poll then (but never in a tight loop).
        return max(min(low, _NEAR_FINISH_FLOOR_S), min(high, remaining * 1.01 + _FINISH_MARGIN_S))
    delay = min(low * 1.5**poll_count, 0.25 * elapsed)
    return max(low, min(high, delay))
