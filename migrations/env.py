"""Alembic environment: migrates the database named by the studio's settings."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from app.models import metadata
from app.settings import get_settings, normalize_database_url

target_metadata = metadata


def _url() -> str:
    configured = context.config.get_main_option("sqlalchemy.url")
    return normalize_database_url(configured) if configured else get_settings().database_url


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = create_engine(_url(), poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
