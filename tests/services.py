"""Finds real PostgreSQL and Redis for the test run: configured, on 127.0.0.1, or embedded."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from app.embedded import EmbeddedPostgres, EmbeddedRedis, free_port, tcp_reachable

LOCAL_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
LOCAL_REDIS = "redis://127.0.0.1:6379/0"
_CACHE = Path(os.environ.get("STUDIO_TEST_CACHE", Path(tempfile.gettempdir()) / "studio-test"))


def postgres_server_url() -> str:
    """A URL to a server where the tests may create and drop databases."""
    if os.environ.get("DATABASE_URL"):
        return os.environ["DATABASE_URL"]
    if tcp_reachable("127.0.0.1", 5432):
        return LOCAL_POSTGRES
    server = EmbeddedPostgres(_CACHE / f"pgdata-{os.getpid()}").start()
    atexit.register(server.stop)
    return server.url


def redis_url() -> str:
    if os.environ.get("REDIS_URL"):
        return os.environ["REDIS_URL"]
    if tcp_reachable("127.0.0.1", 6379):
        return LOCAL_REDIS
    server = EmbeddedRedis(_CACHE / f"redis-{os.getpid()}").start(persist=False)
    atexit.register(server.stop)
    return server.url


class PrivatePostgres:
    """A PostgreSQL server of one test's own (initdb + pg_ctl on a free 127.0.0.1 port), for
    tests that stop the database or change its settings: the shared server is never touched.

    PostgreSQL refuses to run as root, so under root the server runs as the `postgres` user.
    """

    def __init__(self) -> None:
        self.bin_dir = _postgres_bin_dir()
        self.data_dir = Path(tempfile.mkdtemp(prefix="studio-private-pg-"))
        self.port = free_port()
        self._as_postgres = os.geteuid() == 0

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def url_for(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        prefix = ["runuser", "-u", "postgres", "--"] if self._as_postgres else []
        return subprocess.run(
            [*prefix, *args], check=check, capture_output=True, text=True, timeout=120
        )

    def start(self) -> PrivatePostgres:
        if self._as_postgres:
            shutil.chown(self.data_dir, "postgres", "postgres")
        pgdata = str(self.data_dir / "data")
        if not (self.data_dir / "data").exists():
            self._run(str(self.bin_dir / "initdb"), "-D", pgdata, "-A", "trust", "-U", "postgres")
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} "
            f"-c unix_socket_directories='{self.data_dir}' -c fsync=off"
        )
        self._run(
            str(self.bin_dir / "pg_ctl"),
            "-D",
            pgdata,
            "-o",
            options,
            "-l",
            str(self.data_dir / "server.log"),
            "-w",
            "start",
        )
        return self

    def stop(self) -> None:
        """Stop at once (`-m immediate`): to clients, the server is simply gone."""
        self._run(
            str(self.bin_dir / "pg_ctl"),
            "-D",
            str(self.data_dir / "data"),
            "-m",
            "immediate",
            "-w",
            "stop",
            check=False,
        )

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> PrivatePostgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.remove()


def _postgres_bin_dir() -> Path:
    found = shutil.which("pg_ctl")
    if found:
        return Path(os.path.realpath(found)).parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    if candidates:
        return candidates[-1].parent
    import pgserver  # type: ignore[import-untyped]

    return Path(pgserver.__file__).parent / "pginstall" / "bin"
