"""Typed request dependencies shared by every feature's routes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends
from sqlalchemy.orm import Session

from app.db import session_scope
from app.settings import Settings, get_settings


def get_db() -> Iterator[Session]:
    """The request's unit of work: committed when the route returns, rolled back on error."""
    with session_scope() as session:
        yield session


#: scope="function": commit before the response is sent. With FastAPI's default ("request") the
#: commit ran after the response left, so a browser following a redirect could arrive before
#: the row it needed (a new session at sign-in) was visible, and a failed commit went unseen.
SessionDep = Annotated[Session, Depends(get_db, scope="function")]
SettingsDep = Annotated[Settings, Depends(get_settings)]
