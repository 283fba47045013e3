"""The worker's entry point for `celery -A worker.celery_app`: the studio's one Celery app.

The app and its configuration live in app/celery_app.py, below the features that send
messages; its `include` list loads the task modules of worker/ in a worker process.
"""

from app.celery_app import app as app
from app.celery_app import create_celery as create_celery
