"""The studio as six hosts on one machine: a web and a worker host die and nothing is lost.

Every host is a network namespace of its own (tests/hosts/netns.py) with its own address and
hostname: a data host (PostgreSQL, Redis, an S3 store speaking the S3 protocol, the BFL emulator),
two web hosts behind haproxy, two worker hosts and a beat host. Jobs go in through the load
balancer's API; one worker host and one web host are killed with SIGKILL while jobs run. Every
job must end, none may be POSTed twice, the account's active-task cap must hold across hosts,
every image must come back through the load balancer, and each host must show on /ops and serve
its own metrics.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, create_engine, func, select, text
from sqlalchemy.orm import Session

from app.auth.models import AuthSession, Role
from app.auth.service import add_member, create_team, create_user
from app.auth.tokens import issue_token
from app.jobs.models import TERMINAL_STATUSES, Job, JobStatus, holds_slot
from tests.hosts.netns import Network, missing_requirements

pytestmark = [pytest.mark.slow, pytest.mark.pipeline, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
ROLES = ("data", "web1", "web2", "worker1", "worker2", "beat")
#: Jobs pushed before and after the kills (batches of BATCH through the API).
JOBS_BEFORE, JOBS_AFTER, BATCH = 128, 112, 16
CAP = 8
WORKER_CONCURRENCY = 3
# Inside a namespace of its own nothing else listens, so every host can use the usual ports.
PG_PORT, REDIS_PORT, S3_PORT, EMULATOR_PORT = 5432, 6379, 5000, 8765
WEB_PORT, WORKER_METRICS_PORT = 8000, 9100
METRICS_TOKEN = "metrics-" + uuid.uuid4().hex
# One studio, one secret: a form or webhook token signed on one host is checked on another.
SECRET_KEY = "multi-host-secret-" + uuid.uuid4().hex
ADMIN_EMAIL, ADMIN_PASSWORD = "ops@hosts.example", "a long enough password " + uuid.uuid4().hex
JPEG, PNG = b"\xff\xd8\xff", b"\x89PNG"


def _tool(name: str) -> str | None:
    # The virtualenv's own scripts first (moto_server comes with the dev dependencies).
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name)


def _skip_reason() -> str | None:
    reason = missing_requirements(["haproxy", "redis-server", "initdb"])
    if reason is None and _tool("moto_server") is None:
        reason = "moto_server is not installed (moto[server])"
    if reason is None and _pg_user() is None:
        reason = "no unprivileged system user to run PostgreSQL as"
    return reason


def _pg_user() -> str | None:
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    return None


def _wait(
    predicate: Callable[[], object],
    timeout: float,
    what: str,
    logs: Callable[[], str] | None = None,
) -> None:
    """Poll `predicate` (an exception counts as not yet) until true; fail with the hosts' logs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if predicate():
                return
        time.sleep(0.2)
    detail = logs() if logs is not None else ""
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{detail}")


def _answers(url: str) -> bool:
    return httpx.get(url, timeout=2).status_code < 500


def _healthy(url: str) -> bool:
    return httpx.get(url, timeout=2).is_success


@dataclass
class Studio:
    """The running hosts and how to reach them from the test (root namespace)."""

    net: Network
    engine: Engine
    lb_url: str
    emulator_url: str
    token: str
    team_id: uuid.UUID
    haproxy: subprocess.Popen[bytes]

    def url(self, role: str, port: int, path: str = "") -> str:
        return f"http://{self.net.hosts[role].address}:{port}{path}"

    def logs(self) -> str:
        return "\n".join(h.logs() for h in self.net.hosts.values())


def _studio_cmd(words: str) -> list[str]:
    """`python -m app.cli <words>` with this interpreter (words hold no spaces of their own)."""
    return [sys.executable, "-m", "app.cli", *words.split()]


def _base_env(studio_env: dict[str, str]) -> dict[str, str]:
    # Nothing of the test session's own services leaks in: only what a host would be given.
    keep = ("PATH", "LANG", "LC_ALL", "HOME", "TZ")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env.update(studio_env)
    return env


def _start_data_host(net: Network, root: Path) -> dict[str, str]:
    """PostgreSQL, Redis, moto's S3 server and the BFL emulator on the data host."""
    data = net.hosts["data"]
    user = _pg_user()
    assert user is not None
    initdb = Path(shutil.which("initdb") or "initdb").resolve()
    pgdata = root / "pgdata"
    pgdata.mkdir()
    shutil.chown(pgdata, user)
    subprocess.run(
        shlex.split(f"runuser -u {user} -- {initdb} -D {pgdata} -U studio -A trust --no-sync"),
        check=True,
        capture_output=True,
        timeout=120,
    )
    with (pgdata / "pg_hba.conf").open("a") as hba:
        hba.write(f"host all all {net.gateway.rsplit('.', 1)[0]}.0/24 trust\n")
    env = _base_env({})
    settings = (
        f"listen_addresses={data.address} port={PG_PORT} unix_socket_directories={pgdata} "
        "max_connections=300 fsync=off synchronous_commit=off full_page_writes=off"
    )
    data.spawn(
        ["runuser", "-u", user, "--", str(initdb.parent / "postgres"), "-D", str(pgdata)]
        + [arg for setting in settings.split() for arg in ("-c", setting)],
        env=env,
        name="postgres",
    )
    redis_server = shutil.which("redis-server") or "redis-server"
    data.spawn(
        shlex.split(
            f"{redis_server} --bind {data.address} --port {REDIS_PORT} --dir {data.folder} "
            "--save '' --appendonly no --protected-mode no"
        ),
        env=env,
        name="redis",
    )
    data.spawn(
        [_tool("moto_server") or "moto_server", "-H", data.address, "-p", str(S3_PORT)],
        env=env,
        name="s3",
    )
    data.spawn(
        _studio_cmd(f"emulator --host {data.address} --port {EMULATOR_PORT}"),
        env=_base_env(
            {
                "EMULATOR_LATENCY_MEAN_S": "0.6",
                "EMULATOR_LATENCY_JITTER_S": "0.2",
                "EMULATOR_ACCOUNT_ACTIVE_TASK_CAP": str(CAP),
            }
        ),
        name="emulator",
    )
    db_url = f"postgresql+psycopg://studio@{data.address}:{PG_PORT}/studio"
    admin_url = f"postgresql+psycopg://studio@{data.address}:{PG_PORT}/postgres"

    def pg_ready() -> bool:
        admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                conn.execute(text("SELECT 1"))
        finally:
            admin.dispose()
        return True

    _wait(pg_ready, 60, "PostgreSQL on the data host", data.logs)
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text("CREATE DATABASE studio"))
    admin.dispose()
    base = f"http://{data.address}"
    _wait(lambda: _answers(f"{base}:{S3_PORT}/"), 60, "the S3 store", data.logs)
    _wait(lambda: _answers(f"{base}:{EMULATOR_PORT}/"), 60, "the BFL emulator", data.logs)
    import redis

    _wait(lambda: redis.Redis(host=data.address, port=REDIS_PORT).ping(), 30, "Redis", data.logs)
    return {
        "DATABASE_URL": db_url,
        "REDIS_URL": f"redis://{data.address}:{REDIS_PORT}/0",
        "MEDIA_BACKEND": "s3",
        "S3_ENDPOINT_URL": f"{base}:{S3_PORT}",
        "S3_BUCKET": "studio-images",
        "S3_REGION": "us-east-1",
        "S3_ACCESS_KEY_ID": "studio",
        "S3_SECRET_ACCESS_KEY": "studio-secret",
        "EMULATOR_URL": f"{base}:{EMULATOR_PORT}",
    }


def _studio_env(services: dict[str, str], host_folder: Path, **extra: str) -> dict[str, str]:
    metrics = host_folder / "metrics"
    metrics.mkdir(exist_ok=True)
    return _base_env(
        {
            **services,
            "DATA_DIR": str(host_folder / "data"),
            # Each host keeps its own processes' samples, as a machine of its own would.
            "PROMETHEUS_MULTIPROC_DIR": str(metrics),
            "METRICS_TOKEN": METRICS_TOKEN,
            "SECRET_KEY": SECRET_KEY,
            # Plain http between the test and the balancer: cookies without the Secure flag.
            "COOKIE_SECURE": "false",
            "BFL_MAX_ACTIVE_TASKS": str(CAP),
            "API_RATE_LIMIT_PER_MINUTE": "0",
            "POLL_MIN_INTERVAL_S": "0.2",
            "POLL_MAX_INTERVAL_S": "0.5",
            "POLL_LEASE_S": "3",
            "SWEEP_INTERVAL_S": "1",
            "SUBMITTING_STALE_S": "5",
            "LOG_LEVEL": "INFO",
            "LOG_FORMAT": "json",
            **extra,
        }
    )


def haproxy_config(bind: str, servers: dict[str, str]) -> str:
    """deploy/haproxy.cfg for these hosts: its `bind` and web servers replaced, no Docker DNS.

    Every other line (checks, retries, redispatch, the /metrics refusal) is the deployed one.
    The answer names the web host that served it (X-Served-By), for the test to count.
    """
    deployed = (ROOT / "deploy" / "haproxy.cfg").read_text()
    lines = [f"    server {name} {address} check" for name, address in servers.items()]
    rendered, subs = re.subn(r"(?m)^\s*server-template .*$", "\n".join(lines), deployed)
    rendered, binds = re.subn(r"(?m)^(\s*)bind \S+", rf"\g<1>bind {bind}", rendered)
    rendered, dns = re.subn(r"(?m)^resolvers docker\n(?:[ \t]+.*\n)*", "", rendered)
    rendered, balanced = re.subn(
        r"(?m)^(\s*)balance roundrobin$",
        r"\g<0>\n\g<1>http-response set-header X-Served-By %s",
        rendered,
    )
    assert (subs, binds, dns, balanced) == (1, 1, 1, 1), "deploy/haproxy.cfg changed its shape"
    return rendered


def _start_haproxy(net: Network, root: Path) -> tuple[subprocess.Popen[bytes], str]:
    """haproxy in the root namespace, balancing over the web hosts with deploy/haproxy.cfg."""
    from app.embedded import free_port

    port = free_port()
    servers = {role: f"{net.hosts[role].address}:{WEB_PORT}" for role in ("web1", "web2")}
    config = root / "haproxy.cfg"
    config.write_text(haproxy_config(f"127.0.0.1:{port}", servers))
    check = subprocess.run(
        ["haproxy", "-c", "-f", str(config)], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr
    log = (root / "haproxy.log").open("ab")
    proc = subprocess.Popen(
        ["haproxy", "-db", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT
    )
    log.close()
    return proc, f"http://127.0.0.1:{port}"


@pytest.fixture
def studio() -> Iterator[Studio]:
    reason = _skip_reason()
    if reason and os.environ.get("CI") and "haproxy" in reason:
        pytest.fail(f"{reason} in CI; .ci/run installs it")
    if reason:
        pytest.skip(f"multi-host test needs root, ip, haproxy and moto_server: {reason}")
    root = Path(tempfile.mkdtemp(prefix="studio-hosts-"))
    root.chmod(0o755)  # PostgreSQL runs as an unprivileged user under it
    net = Network.create(ROLES, root)
    haproxy: subprocess.Popen[bytes] | None = None
    engine: Engine | None = None
    try:
        services = _start_data_host(net, root)
        migrate = subprocess.run(
            _studio_cmd("migrate"),
            env=_studio_env(services, root),
            cwd=root,
            capture_output=True,
            text=True,
            check=False,
            timeout=180,
        )
        assert migrate.returncode == 0, migrate.stdout + migrate.stderr
        engine = create_engine(services["DATABASE_URL"], pool_size=2)
        with Session(engine) as db:
            team = create_team(db, "Many hosts")
            admin = create_user(
                db,
                email=ADMIN_EMAIL,
                name="Ops",
                password=ADMIN_PASSWORD,
                is_superuser=True,
            )
            add_member(db, admin, team, Role.ADMIN)
            token = issue_token(db, user_id=admin.id, team_id=team.id, name="load").secret
            team_id = team.id
            db.commit()

        for role in ("web1", "web2"):
            host = net.hosts[role]
            host.spawn(
                _studio_cmd(f"web --host {host.address} --port {WEB_PORT}"),
                # As in docker-compose.yml: only the balancer may name the client. It runs in
                # the root namespace, so the web hosts see it at the bridge's own address.
                env=_studio_env(services, host.folder, TRUSTED_PROXIES=net.gateway),
                name="web",
            )
        for role in ("worker1", "worker2"):
            host = net.hosts[role]
            host.spawn(
                _studio_cmd(f"worker --concurrency {WORKER_CONCURRENCY}"),
                env=_studio_env(
                    services, host.folder, WORKER_METRICS_PORT=str(WORKER_METRICS_PORT)
                ),
                name="worker",
            )
        beat = net.hosts["beat"]
        beat.spawn(
            _studio_cmd("beat"),
            env=_studio_env(services, beat.folder),
            name="beat",
        )
        haproxy, lb_url = _start_haproxy(net, root)
        built = Studio(
            net=net,
            engine=engine,
            lb_url=lb_url,
            emulator_url=services["EMULATOR_URL"],
            token=token,
            team_id=team_id,
            haproxy=haproxy,
        )
        for role in ("web1", "web2"):
            health = built.url(role, WEB_PORT, "/healthz")
            _wait(partial(_healthy, health), 90, f"{role} to answer", built.logs)
        for role in ("worker1", "worker2"):
            scrape = built.url(role, WORKER_METRICS_PORT, "/metrics")
            _wait(partial(_answers, scrape), 90, f"{role}'s worker to be ready", built.logs)
        yield built
    finally:
        if haproxy is not None:
            haproxy.kill()
            haproxy.wait(timeout=10)
        if engine is not None:
            engine.dispose()
        net.close()
        leftovers = net.leftovers()
        shutil.rmtree(root, ignore_errors=True)
        assert not leftovers, f"namespaces or links left behind: {leftovers}"


@dataclass
class Pusher:
    """Queues jobs through the load balancer's API in batches, on a thread of its own."""

    studio: Studio
    count: int
    tag: str
    ids: list[uuid.UUID] = field(default_factory=list)
    batches_done: int = 0
    served_by: dict[str, int] = field(default_factory=dict)
    error: BaseException | None = None
    resent: int = 0
    _thread: threading.Thread | None = None

    def run(self) -> list[uuid.UUID]:
        headers = {"Authorization": f"Bearer {self.studio.token}"}
        with httpx.Client(base_url=self.studio.lb_url, headers=headers, timeout=30) as client:
            for first in range(0, self.count, BATCH):
                body = {
                    "model": "flux-2-pro",
                    "prompt": f"a harbour at dusk, {self.tag} batch {first // BATCH}",
                    "params": {"width": 256, "height": 256},
                    "count": min(BATCH, self.count - first),
                }
                answer = self._post(client, body)
                self.ids += [uuid.UUID(job["id"]) for job in answer.json()["jobs"]]
                server = answer.headers.get("x-served-by", "?")
                self.served_by[server] = self.served_by.get(server, 0) + 1
                self.batches_done += 1
        return self.ids

    def _post(self, client: httpx.Client, body: dict[str, object]) -> httpx.Response:
        # A request in flight to a host that dies gets no answer: sending it again under the
        # same Idempotency-Key either queues it or replays what the first one queued.
        key = str(uuid.uuid4())
        answer: httpx.Response | None = None
        for _attempt in range(40):
            try:
                answer = client.post("/api/v1/jobs", json=body, headers={"Idempotency-Key": key})
            except httpx.TransportError:
                answer = None
            if answer is not None and answer.status_code in (200, 201):
                return answer
            self.resent += 1
            time.sleep(0.25)
        raise AssertionError(answer.text if answer is not None else "no answer from the balancer")

    def start(self) -> Pusher:
        def target() -> None:
            try:
                self.run()
            except BaseException as exc:
                self.error = exc

        self._thread = threading.Thread(target=target, name=f"push-{self.tag}", daemon=True)
        self._thread.start()
        return self

    def join(self, timeout: float) -> list[uuid.UUID]:
        assert self._thread is not None
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"pushing {self.tag} jobs did not finish"
        if self.error is not None:
            raise self.error
        return self.ids


def _counts(engine: Engine, team_id: uuid.UUID) -> dict[str, int]:
    """Jobs by status, and under "holding_slot" those holding a slot of the account's cap (at
    BFL and not yet Ready: a Ready task's image may still be downloading, its slot is free)."""
    with Session(engine) as db:
        rows = db.execute(
            select(Job.status, func.count()).where(Job.team_id == team_id).group_by(Job.status)
        ).all()
        holding = db.scalar(
            select(func.count()).select_from(Job).where(Job.team_id == team_id, holds_slot())
        )
    counts = {str(status): int(n) for status, n in rows}
    counts["holding_slot"] = int(holding or 0)
    return counts


def _scrape(url: str) -> str:
    refused = httpx.get(url, timeout=10)
    assert refused.status_code == 401, f"{url} served metrics without the token"
    answer = httpx.get(url, headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.text


def _sample_sum(exposition: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in exposition.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _ops_page(studio: Studio) -> str:
    answer = httpx.get(
        f"{studio.lb_url}/ops", headers={"Authorization": f"Bearer {studio.token}"}, timeout=10
    )
    assert answer.status_code == 200, answer.text[:2000]
    return answer.text


def _sign_in_through_the_balancer(studio: Studio) -> list[str]:
    """Sign in with the form through the balancer, claiming another address in a header.

    Returns the web hosts that served the form and the sign-in (round robin: usually both).
    """
    with httpx.Client(base_url=studio.lb_url, timeout=10) as browser:
        form = browser.get("/login")
        assert form.status_code == 200, form.text[:500]
        found = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
        assert found is not None, "no anti-forgery token in the sign-in form"
        answer = browser.post(
            "/login",
            data={
                "email": ADMIN_EMAIL,
                "password": ADMIN_PASSWORD,
                "csrf_token": found.group(1),
                "next": "/",
            },
            headers={"X-Forwarded-For": "203.0.113.9"},
        )
        assert answer.status_code == 303, answer.text[:1000]
    return [form.headers.get("x-served-by", "?"), answer.headers.get("x-served-by", "?")]


def test_studio_on_six_hosts_survives_losing_a_worker_host_and_a_web_host(studio: Studio) -> None:
    hosts = studio.net.hosts
    started = time.monotonic()
    peak_in_db = 0

    def watch() -> dict[str, int]:
        nonlocal peak_in_db
        counts = _counts(studio.engine, studio.team_id)
        peak_in_db = max(peak_in_db, counts["holding_slot"])
        return counts

    def wait_ready(at_least: int, timeout: float) -> None:
        _wait(
            lambda: watch().get(JobStatus.READY, 0) >= at_least,
            timeout,
            f"{at_least} ready jobs",
            studio.logs,
        )

    # Every worker host and the beat host beat in Redis, and /ops (through the balancer) says so.
    _wait(
        lambda: all(hosts[r].hostname in _ops_page(studio) for r in ("worker1", "worker2")),
        60,
        "both worker hosts on /ops",
        studio.logs,
    )
    ops_before = _ops_page(studio)
    beat_shown = "beat running" in ops_before or hosts["beat"].hostname in ops_before
    assert beat_shown, "the beat host's heartbeat is not on /ops"
    # A sign-in through the balancer records the client's own address, not the balancer's
    # nor the one a forged X-Forwarded-For claims (the balancer replaces that header).
    sign_in_served_by = _sign_in_through_the_balancer(studio)
    with Session(studio.engine) as db:
        addresses = db.scalars(select(AuthSession.ip_address)).all()
    assert addresses == ["127.0.0.1"], addresses
    # The public side does not serve metrics; each host is scraped where it runs.
    assert httpx.get(f"{studio.lb_url}/metrics", timeout=10).status_code == 404

    before = Pusher(studio, JOBS_BEFORE, "before")
    jobs = before.run()
    assert set(before.served_by) == {"web1", "web2"}, before.served_by
    wait_ready(24, 120)

    # Each host's own metrics, scraped from outside (the token is required: not loopback).
    doomed_worker = _scrape(studio.url("worker1", WORKER_METRICS_PORT, "/metrics"))
    doomed_web = _scrape(studio.url("web1", WEB_PORT, "/metrics"))
    assert _sample_sum(doomed_worker, "studio_job_transitions_total", to_status="ready") > 0, (
        "worker1 had finished no job before it was killed"
    )
    assert _sample_sum(doomed_web, "studio_http_request_seconds_count") > 0

    killed_worker = hosts["worker1"].kill_all()
    counts_at_kill = watch()
    wait_ready(counts_at_kill.get(JobStatus.READY, 0) + 16, 120)

    # More jobs come in while web1 dies: the balancer routes around it, and a request that was
    # in flight there is sent again under its Idempotency-Key.
    after = Pusher(studio, JOBS_AFTER, "after").start()
    _wait(lambda: after.batches_done >= 2 or after.error is not None, 60, "the second push")
    killed_web = hosts["web1"].kill_all()
    jobs += after.join(180)
    assert killed_worker > WORKER_CONCURRENCY and killed_web >= 1
    total = JOBS_BEFORE + JOBS_AFTER
    _wait(
        lambda: sum(v for k, v in watch().items() if k in TERMINAL_STATUSES) >= total,
        300,
        f"all {total} jobs to end (now {_counts(studio.engine, studio.team_id)})",
        studio.logs,
    )
    duration = time.monotonic() - started

    with Session(studio.engine) as db:
        rows = db.scalars(select(Job).where(Job.team_id == studio.team_id)).all()
    assert sorted(r.id for r in rows) == sorted(jobs)
    outcomes = [(r.status, r.error_code) for r in rows]
    interrupted = outcomes.count((JobStatus.FAILED, "submission_unknown"))
    ready = [r for r in rows if r.status == JobStatus.READY]
    # Only a POST in flight on the killed worker host may end unknown (never sent again); at
    # most one per pool process there.
    assert interrupted <= WORKER_CONCURRENCY, outcomes
    assert len(ready) == total - interrupted, sorted(set(outcomes))

    # Each job POSTed at most once, each ready one exactly once (jobs carry distinct seeds).
    log = httpx.get(f"{studio.emulator_url}/_emulator/submissions", timeout=10).json()
    seeds = [int(entry["payload"]["seed"]) for entry in log["submissions"]]
    assert len(seeds) == len(set(seeds)), "a job was POSTed twice"
    assert {r.seed for r in ready} <= set(seeds)
    assert len(seeds) <= total

    # The account's cap held across four worker processes on two hosts.
    state = httpx.get(f"{studio.emulator_url}/_emulator/state", timeout=10).json()
    assert state["account_cap_refusals"] == 0, state
    assert state["peak_active_tasks"] <= CAP and peak_in_db <= CAP, (state, peak_in_db)
    assert state["peak_active_tasks"] >= CAP // 2, "the run never came near the cap"

    # Every image comes back through the balancer, from the surviving web host.
    served_by: dict[str, int] = {}
    headers = {"Authorization": f"Bearer {studio.token}"}
    with httpx.Client(base_url=studio.lb_url, headers=headers, timeout=30) as client:
        for job in ready:
            answer = client.get(f"/api/v1/images/{job.id}/original")
            assert answer.status_code == 200, (job.id, answer.status_code, answer.text[:300])
            assert answer.headers["content-type"].startswith("image/")
            assert answer.content[:4].startswith((JPEG, PNG)), answer.content[:16]
            server = answer.headers.get("x-served-by", "?")
            served_by[server] = served_by.get(server, 0) + 1
    assert set(served_by) == {"web2"}, served_by

    # The survivors: their metrics, and the worker host left on /ops.
    live_worker = _scrape(studio.url("worker2", WORKER_METRICS_PORT, "/metrics"))
    live_web = _scrape(studio.url("web2", WEB_PORT, "/metrics"))
    by_worker2 = _sample_sum(live_worker, "studio_job_transitions_total", to_status="ready")
    by_worker1 = _sample_sum(doomed_worker, "studio_job_transitions_total", to_status="ready")
    assert by_worker2 > 0
    # A worker host's samples are its own: worker2's count is not the studio-wide count.
    assert by_worker2 < len(ready)
    assert _sample_sum(live_web, "studio_http_request_seconds_count") > 0
    assert re.search(r"^studio_bfl_active_tasks_cap 8(\.0)?$", live_web, re.M), "cap gauge"
    assert not re.search(r"^studio_jobs\{", live_worker, re.M), "studio figures on a worker"
    assert hosts["worker2"].hostname in _ops_page(studio)

    figures = {
        "jobs": total,
        "ready": len(ready),
        "submission_unknown": interrupted,
        "posts": len(seeds),
        "duration_s": round(duration, 1),
        "peak_active_emulator": state["peak_active_tasks"],
        "peak_active_db": peak_in_db,
        "cap": CAP,
        "ready_by_worker1_before_kill": by_worker1,
        "ready_by_worker2": by_worker2,
        "posts_served_by": {"before": before.served_by, "after": after.served_by},
        "posts_resent": before.resent + after.resent,
        "images_served_by": served_by,
        "sign_in_served_by": sign_in_served_by,
        "processes_killed": {"worker1": killed_worker, "web1": killed_web},
    }
    print(f"\nmulti-host run: {figures}")
