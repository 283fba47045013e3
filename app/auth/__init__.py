"""Accounts: people, teams, memberships, sessions, invites and API tokens."""

#: Celery task name of the hourly purge of ended sessions (worker/auth_tasks.py, beat schedule).
PURGE_SESSIONS_TASK = "auth.purge_sessions"
