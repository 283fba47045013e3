"""Jobs: the generation pipeline from submission to stored images.

The names of the pipeline's Celery tasks and queues live here, below every module of the
feature, so the Celery app (app/celery_app.py) can route them without importing the pipeline.
"""

SUBMIT_NEXT = "jobs.submit_next"
POLL = "jobs.poll"
SWEEP = "jobs.sweep"
#: With webhooks on: polls whose webhook never came (beat runs it every POLL_MAX_INTERVAL_S).
RESTART_OVERDUE_POLLS = "jobs.restart_overdue_polls"
#: Hourly: reference images no job uses, past their grace period, are removed.
PURGE_REFERENCES = "jobs.purge_references"

#: Submissions and polls travel on separate queues, so a burst of wake-ups from a big batch
#: does not sit in front of polls whose images are ready.
DISPATCH_QUEUE = "studio.dispatch"
POLL_QUEUE = "studio.poll"

#: The longest countdown any message gets. Redis redelivers a message its consumer has not
#: acknowledged within the broker's visibility timeout (app/celery_app.py), and a message
#: waiting for its ETA sits unacknowledged in a worker: every countdown must stay far below it.
#: Longer waits live in PostgreSQL (a job's not_before, the account's next probe, a poll's
#: next_poll_at); a wake-up that comes early finds nothing due, and the sweeper re-drives the
#: rest when it is due.
MAX_COUNTDOWN_S = 60.0
