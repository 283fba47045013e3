"""The `studio` command line: run the whole studio or any one of its processes."""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from urllib.parse import urlparse

import typer

from app.embedded import EmbeddedPostgres, EmbeddedRedis, free_port, tcp_reachable
from app.settings import Settings, get_settings

cli = typer.Typer(help="FLUX Team Studio", no_args_is_help=True, add_completion=False)
users_cli = typer.Typer(help="Manage people", no_args_is_help=True)
cli.add_typer(users_cli, name="users")

FIRST_ADMIN_EMAIL = "admin@studio.local"


def _say(message: str) -> None:
    typer.echo(f"studio: {message}", err=True)


def migrate_database(url: str | None = None) -> None:
    """Bring the database to the newest schema (alembic upgrade head)."""
    from alembic import command
    from alembic.config import Config

    root = Path(__file__).resolve().parent.parent
    config = Config(str(root / "alembic.ini"))
    config.set_main_option("script_location", str(root / "migrations"))
    if url:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(config, "head")


def ensure_first_admin(data_dir: Path) -> tuple[str, str] | None:
    """Create an admin and a first team when the database has no one yet; returns credentials."""
    from app.auth.models import Role
    from app.auth.service import add_member, create_team, create_user, user_count
    from app.db import session_scope
    from app.security import new_token

    with session_scope() as db:
        if user_count(db) > 0:
            return None
        # 24 random bytes: far past any strength rule, and checked by the same rule anyway.
        password = new_token(24)
        team = create_team(db, "My team")
        user = create_user(
            db,
            email=FIRST_ADMIN_EMAIL,
            name="Admin",
            password=password,
            is_superuser=True,
            team_names=[team.name],
        )
        add_member(db, user, team, Role.ADMIN)
    data_dir.mkdir(parents=True, exist_ok=True)
    note = data_dir / "first-admin.txt"
    note.write_text(f"email: {FIRST_ADMIN_EMAIL}\npassword: {password}\n")
    note.chmod(0o600)
    return FIRST_ADMIN_EMAIL, password


SECRET_KEY_FILE = "secret_key"  # noqa: S105 (a file name)


def ensure_secret_key(data_dir: Path) -> str:
    """The studio's SECRET_KEY kept in `data_dir/secret_key` (mode 0600): read when the file
    exists, else 48 random bytes written there first, so every later run signs alike."""
    from app.security import new_token

    path = data_dir / SECRET_KEY_FILE
    if path.exists():
        value = path.read_text().strip()
        if len(value) >= 32:
            path.chmod(0o600)
            return value
    data_dir.mkdir(parents=True, exist_ok=True)
    value = new_token(48)
    # Created with 0600 from the start: the key is never readable by others, not even briefly.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(value + "\n")
    path.chmod(0o600)
    return value


def refuse_dev_secret_key(command: str) -> None:
    """Exit with instructions when a production process would run with the built-in key."""
    if not get_settings().uses_dev_secret_key:
        return
    _say(
        f"refusing to run `studio {command}` with the built-in development SECRET_KEY: anyone "
        "who knows it can forge this studio's webhook tokens. Set SECRET_KEY to a long random "
        "value in the environment or .env (for example the output of "
        "`python -c 'import secrets; print(secrets.token_urlsafe(48))'`), the same for every "
        "web, worker and beat process; `studio up` keeps one in DATA_DIR/secret_key for you."
    )
    raise typer.Exit(2)


class Supervisor:
    """Starts child processes in their own process groups and stops every one of them."""

    def __init__(self) -> None:
        self.children: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, args: list[str], env: dict[str, str]) -> None:
        self.children[name] = subprocess.Popen(args, env=env, start_new_session=True)

    def first_exited(self) -> str | None:
        for name, proc in self.children.items():
            if proc.poll() is not None:
                return name
        return None

    def stop_all(self, timeout: float = 15.0) -> None:
        for proc in self.children.values():
            if proc.poll() is None:
                _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self.children.values():
            remaining = max(0.1, deadline - time.monotonic())
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=remaining)
        for proc in self.children.values():
            # A group may hold grandchildren (Celery's pool) even when its leader has exited.
            _signal_group(proc, signal.SIGKILL)
            if proc.poll() is None:
                proc.wait()


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"


def fresh_metrics_dir(data_dir: Path) -> Path:
    """An empty folder for prometheus-client's multiprocess samples of this run.

    Every process of one studio writes there, so /metrics counts them all; a folder left by an
    earlier run would add its dead processes' counts, hence emptied first.
    """
    path = data_dir / "metrics"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def _ensure_metrics_dir() -> None:
    # prometheus-client writes into the folder as soon as a metric exists: it must be there.
    path = os.environ.get(METRICS_DIR_ENV)
    if path:
        Path(path).mkdir(parents=True, exist_ok=True)


def _python() -> str:
    return sys.executable


def _wait_http(url: str, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> bool:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            httpx.get(url, timeout=1.0)
            return True
        except httpx.HTTPError:
            time.sleep(0.2)
    return False


def _studio_env(
    settings: Settings, data_dir: Path, host: str, port: int
) -> tuple[dict[str, str], str]:
    """The environment every child process gets, and the studio's address to print."""
    env = dict(os.environ)
    env["DATA_DIR"] = str(data_dir)
    if not env.get(METRICS_DIR_ENV):
        env[METRICS_DIR_ENV] = str(fresh_metrics_dir(data_dir))
    if settings.uses_dev_secret_key:
        env["SECRET_KEY"] = ensure_secret_key(data_dir)
        _say(f"SECRET_KEY unset: using the one kept in {data_dir / SECRET_KEY_FILE}")
    shown_host = "localhost" if host in ("127.0.0.1", "0.0.0.0") else host  # noqa: S104
    url = f"http://{shown_host}:{port}"
    if not settings.PUBLIC_URL:
        # Invite links need an address; locally it is this one (webhooks stay off).
        env["LOCAL_URL"] = url
    return env, url


def _start_emulator(settings: Settings, env: dict[str, str], supervisor: Supervisor) -> None:
    """Start the BFL emulator on a free port and point `env` at it."""
    emulator_url = urlparse(settings.EMULATOR_URL)
    emu_port = emulator_url.port or 8765
    if tcp_reachable("127.0.0.1", emu_port):
        emu_port = free_port()
    env["EMULATOR_URL"] = f"http://127.0.0.1:{emu_port}"
    # The emulator hands out polling URLs on localhost (its regional host), which the
    # BFL client follows only when allowed, like any host besides the API host.
    hosts = [h.strip() for h in settings.BFL_ALLOWED_HOSTS.split(",")]
    if "localhost" not in hosts:
        env["BFL_ALLOWED_HOSTS"] = ",".join([*hosts, "localhost"])
    _say(f"BFL_API_KEY unset: starting the BFL emulator on {env['EMULATOR_URL']}")
    supervisor.start(
        "emulator", [_python(), "-m", "app.cli", "emulator", "--port", str(emu_port)], env
    )


def _start_studio(
    env: dict[str, str], supervisor: Supervisor, host: str, port: int, concurrency: int
) -> None:
    """Start web, worker and beat with `env`."""
    supervisor.start(
        "web", [_python(), "-m", "app.cli", "web", "--host", host, "--port", str(port)], env
    )
    supervisor.start(
        "worker",
        [_python(), "-m", "app.cli", "worker", "--concurrency", str(concurrency)],
        env,
    )
    supervisor.start("beat", [_python(), "-m", "app.cli", "beat"], env)


def _announce(
    settings: Settings, url: str, data_dir: Path, creds: tuple[str, str] | None, stopping: bool
) -> None:
    """Tell the person where the studio runs and how to sign in."""
    if creds:
        typer.echo(f"First run: sign in as {creds[0]} with password {creds[1]}")
        typer.echo(f"(also saved in {data_dir / 'first-admin.txt'}; change it under Account)")
    elif not stopping:
        typer.echo("Sign in with your account; `studio users create` adds people.")
    if settings.bfl_emulated:
        typer.echo("No BFL_API_KEY: images come from the built-in emulator (synthetic).")
    typer.echo("Press Ctrl-C to stop.\n")


@cli.command()
def up(
    host: str = typer.Option("127.0.0.1", help="Address the web app listens on."),
    port: int = typer.Option(8000, help="Port the web app listens on."),
    workers: int = typer.Option(0, help="Worker processes (default WORKER_CONCURRENCY)."),
) -> None:
    """Run the whole studio: database, Redis and emulator where unset, web, worker and beat."""
    settings = get_settings()
    data_dir = settings.DATA_DIR.resolve()
    env, url = _studio_env(settings, data_dir, host, port)
    embedded_pg: EmbeddedPostgres | None = None
    embedded_redis: EmbeddedRedis | None = None
    supervisor = Supervisor()
    stopping = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    try:
        if not settings.DATABASE_URL:
            _say(f"DATABASE_URL unset: starting embedded PostgreSQL in {data_dir / 'pgdata'}")
            embedded_pg = EmbeddedPostgres(data_dir / "pgdata").start()
            env["DATABASE_URL"] = embedded_pg.url
        if not settings.REDIS_URL:
            _say(f"REDIS_URL unset: starting embedded Redis in {data_dir / 'redis'}")
            embedded_redis = EmbeddedRedis(data_dir / "redis").start()
            env["REDIS_URL"] = embedded_redis.url
        if settings.bfl_emulated:
            _start_emulator(settings, env, supervisor)

        os.environ.update(env)
        get_settings.cache_clear()
        _say("applying database migrations")
        migrate_database(env.get("DATABASE_URL"))
        creds = ensure_first_admin(data_dir)
        _start_studio(env, supervisor, host, port, workers or settings.WORKER_CONCURRENCY)
        if _wait_http(f"http://127.0.0.1:{port}/healthz", 60, supervisor.children["web"]):
            typer.echo(f"\nFLUX Team Studio is running at {url}")
        _announce(settings, url, data_dir, creds, stopping)

        while not stopping:
            exited = supervisor.first_exited()
            if exited:
                _say(f"{exited} exited; stopping everything")
                break
            time.sleep(0.3)
    finally:
        _say("stopping")
        supervisor.stop_all()
        if embedded_redis is not None:
            embedded_redis.stop()
        if embedded_pg is not None:
            embedded_pg.stop()
        _say("stopped")


@cli.command()
def web(
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8000, help="Port to listen on."),
    processes: int = typer.Option(1, help="uvicorn worker processes."),
) -> None:
    """Run the web app (uvicorn)."""
    import uvicorn

    refuse_dev_secret_key("web")

    uvicorn.run(
        "app.main:app",
        host=host,
        port=port,
        workers=processes,
        # The app resolves X-Forwarded-For itself, from TRUSTED_PROXIES (app.ops.proxies).
        proxy_headers=False,
        log_level="warning",
    )


@cli.command()
def worker(
    concurrency: int = typer.Option(0, help="Processes (default WORKER_CONCURRENCY)."),
    queues: str = typer.Option("", help="Comma-separated queues (default: all)."),
    name: str = typer.Option(
        "",
        help="Celery node name (default studio-worker-<pid>@<host>, unique per process; "
        "%h is the host name).",
    ),
) -> None:
    """Run a Celery worker."""
    refuse_dev_secret_key("worker")
    # Imported when the command runs: building the Celery app reads the settings and
    # connects its signals, which the other commands have no use for.
    from app.celery_app import app as celery_app

    argv = [
        "worker",
        # Celery's default name (celery@<host>) is the same for every worker of a host: two of
        # them would share one heartbeat and count as one on /ops and in /metrics.
        "--hostname",
        name or f"studio-worker-{os.getpid()}@%h",
        "--loglevel",
        get_settings().LOG_LEVEL,
        "--concurrency",
        str(concurrency or get_settings().WORKER_CONCURRENCY),
        "--without-gossip",
        "--without-mingle",
    ]
    if queues:
        argv += ["--queues", queues]
    celery_app.worker_main(argv)


@cli.command()
def beat() -> None:
    """Run Celery beat: the sweeper and the credit balance refresh."""
    refuse_dev_secret_key("beat")
    # Imported when the command runs: building the Celery app reads the settings and
    # connects its signals, which the other commands have no use for.
    from app.celery_app import app as celery_app

    settings = get_settings()
    settings.DATA_DIR.mkdir(parents=True, exist_ok=True)
    schedule = settings.DATA_DIR.resolve() / "celerybeat-schedule"
    celery_app.start(["beat", "--loglevel", settings.LOG_LEVEL, "--schedule", str(schedule)])


@cli.command()
def migrate() -> None:
    """Apply database migrations (alembic upgrade head)."""
    migrate_database()
    _say("database is at the newest schema")


@cli.command()
def emulator(
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8765, help="Port to listen on."),
) -> None:
    """Run the BFL emulator: the BFL API contract with synthetic images."""
    from app.emulator import run

    run(host=host, port=port)


@users_cli.command("create")
def users_create(
    email: str = typer.Argument(..., help="Sign-in email."),
    name: str = typer.Option("", help="Display name."),
    team: str = typer.Option("My team", help="Team name; created if it does not exist."),
    role: str = typer.Option("member", help="member, manager or admin."),
    password: str = typer.Option("", help="Password (asked for when omitted)."),
) -> None:
    """Create a person and add them to a team."""
    from sqlalchemy import select

    from app.auth.models import Role, Team
    from app.auth.service import AccountError, add_member, create_team, create_user
    from app.db import session_scope

    try:
        team_role = Role(role)
    except ValueError:
        _say("role must be member, manager or admin")
        raise typer.Exit(2) from None
    if not password:
        password = getpass.getpass("Password: ")
    try:
        with session_scope() as db:
            found = db.scalars(select(Team).where(Team.name == team)).first()
            target = found or create_team(db, team)
            user = create_user(db, email=email, name=name, password=password, team_names=[team])
            add_member(db, user, target, team_role)
    except AccountError as exc:
        _say(str(exc))
        raise typer.Exit(2) from None
    _say(f"created {email} as {team_role.value} of {team}")


def main() -> None:
    _ensure_metrics_dir()
    cli()


if __name__ == "__main__":
    main()
