"""Database engine, the declarative base, and the session scopes used by requests and tasks."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import DateTime, Engine, MetaData, create_engine, event, func
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from app.settings import get_settings

# Stable constraint names keep Alembic migrations reproducible.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> uuid.UUID:
    return uuid.uuid4()


class Timestamped:
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), default=utcnow, nullable=False
    )


def _session_in_utc(dbapi_connection: Any, _record: Any) -> None:
    # Every connection talks UTC, whatever `ALTER DATABASE/ROLE ... SET timezone` or the
    # server's default says: timestamps read back carry +00:00, and date_trunc('day', ...)
    # buckets by the UTC day like the rest of the studio. SET outside a transaction, or the
    # pool's first rollback would undo it; a plain SET (not a startup option) also passes
    # through PgBouncer, which tracks TimeZone per client.
    autocommit = dbapi_connection.autocommit
    dbapi_connection.autocommit = True
    try:
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SET TIME ZONE 'UTC'")
    finally:
        dbapi_connection.autocommit = autocommit


def create_studio_engine(url: str, **kwargs: Any) -> Engine:
    """An engine whose every connection uses UTC as its session time zone."""
    engine = create_engine(url, **kwargs)
    event.listen(engine, "connect", _session_in_utc)
    return engine


@lru_cache
def get_engine() -> Engine:
    settings = get_settings()
    return create_studio_engine(
        settings.database_url,
        pool_pre_ping=True,
        pool_size=10,
        max_overflow=10,
        connect_args={"application_name": "flux-studio"},
    )


@lru_cache
def get_sessionmaker() -> sessionmaker[Session]:
    return sessionmaker(bind=get_engine(), expire_on_commit=False)


@contextmanager
def session_scope() -> Iterator[Session]:
    """One unit of work: commits on success, rolls back on error. Services only flush."""
    session = get_sessionmaker()()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


#: SQLSTATEs meaning the server went away or refuses connections (class 08: connection
#: exception; 57P01-57P03: admin shutdown, crash shutdown, cannot connect now).
_UNAVAILABLE_SQLSTATES = ("08", "57P01", "57P02", "57P03")


def database_unavailable(error: BaseException) -> bool:
    """True when `error` says PostgreSQL cannot be reached (down, restarting, refusing, pool
    exhausted), as opposed to a query that failed on a working server (a bug, a deadlock)."""
    if isinstance(error, sa_exc.TimeoutError):
        return True  # no pooled connection came free in time
    if not isinstance(error, sa_exc.DBAPIError):
        return False
    if error.connection_invalidated:
        return True
    if not isinstance(error, sa_exc.OperationalError | sa_exc.InterfaceError):
        return False
    sqlstate = getattr(error.orig, "sqlstate", None)
    # Failures to connect at all carry no SQLSTATE: the server never answered.
    return sqlstate is None or str(sqlstate).startswith(_UNAVAILABLE_SQLSTATES)
