"""A PostgreSQL server of one test's own (initdb/pg_ctl on a free port), for tests that stop it.

Tests that take the database away must never touch the shared server, so they start this one:

```
with PrivatePostgres() as pg:
    url = pg.create_database("studio")   # migrated to head
    pg.stop()                            # as `pg_ctl -m fast stop` would in an outage
    pg.start()
```
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Self

from sqlalchemy import create_engine, text

from app.embedded import free_port


def _bin_dir() -> Path:
    """Where initdb and pg_ctl live: on PATH, Debian's folder, or the pgserver package's."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    debian = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if debian:
        return Path(debian[-1]).parent
    import pgserver

    return Path(pgserver.__file__).parent / "pginstall" / "bin"


def _run_as() -> str | None:
    """PostgreSQL refuses to run as root: run it as the `postgres` (or `pgserver`) user then."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "pgserver"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise RuntimeError("running as root with no 'postgres' user to run PostgreSQL as")


class PrivatePostgres:
    """initdb in a temporary folder, then start/stop with pg_ctl on a free loopback port."""

    def __init__(self) -> None:
        self.bin = _bin_dir()
        self.user = _run_as()
        self.root = Path(tempfile.mkdtemp(prefix="studio-private-pg-"))
        self.data = self.root / "data"
        self.log_path = self.root / "server.log"
        self.port = free_port()
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self._pg("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")

    def _pg(self, program: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bin / program), *args],
            check=True,
            capture_output=True,
            text=True,
            user=self.user,
            cwd=self.root,
        )

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> Self:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} "
            "-c fsync=off -c full_page_writes=off -c max_connections=100"
        )
        self._pg(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log_path), "-o", options, "-w", "start"
        )
        return self

    def stop(self, mode: str = "fast") -> None:
        """`pg_ctl -m fast stop`: open connections are cut, as in an outage or a restart."""
        self._pg("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def running(self) -> bool:
        try:
            self._pg("pg_ctl", "-D", str(self.data), "status")
        except subprocess.CalledProcessError:
            return False
        return True

    def create_database(self, name: str) -> str:
        """Create database `name`, migrate it to head, and return its URL."""
        admin = create_engine(self.url(), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        from app.cli import migrate_database

        migrate_database(self.url(name))
        return self.url(name)

    def close(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            if self.running():
                self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
