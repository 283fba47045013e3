"""Writes Alembic migrations from model changes, against a scratch database it creates and drops."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
VERSIONS = ROOT / "migrations" / "versions"


@contextmanager
def scratch_database() -> Iterator[str]:
    base = os.environ.get("DATABASE_URL") or "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    base = base.replace("postgresql://", "postgresql+psycopg://", 1)
    name = f"studio_scratch_{uuid.uuid4().hex[:8]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(base).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _config(url: str) -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("new", "initial"):
        print("usage: python -m scripts.migrations new NAME | initial", file=sys.stderr)
        return 2
    with scratch_database() as url:
        config = _config(url)
        if argv[0] == "initial":
            for old in VERSIONS.glob("0001_*.py"):
                old.unlink()
            command.revision(config, "initial schema", autogenerate=True, rev_id="0001")
        else:
            if len(argv) < 2 or not argv[1].strip():
                print('name the migration: make migration NAME="add x"', file=sys.stderr)
                return 2
            command.upgrade(config, "head")
            existing = sorted(p.name for p in VERSIONS.glob("[0-9][0-9][0-9][0-9]_*.py"))
            next_id = f"{int(existing[-1][:4]) + 1:04d}" if existing else "0001"
            command.revision(config, argv[1], autogenerate=True, rev_id=next_id)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
