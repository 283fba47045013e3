"""Celery task entry points; each is a thin wrapper around a service in app/."""
