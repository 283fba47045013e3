"""Reusable pieces for tests that run the real pipeline: worker and beat processes, waiting.

```
with EmulatorServer(EmulatorConfig(latency_mean_s=0.2)) as emulator:
    with WorkerProcess(pipeline_env(emulator)) as worker:
        jobs = queue_jobs(committed_db, person, count=3)
        wait_for_terminal(engine, [j.id for j in jobs])
```
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Self

import httpx
import psutil
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from app.jobs import messages, state
from app.jobs.models import TERMINAL_STATUSES, Job
from app.jobs.service import create_jobs
from tests.factories import make_person

ROOT = Path(__file__).resolve().parent.parent

#: Settings that make the pipeline quick enough for tests (override per test as needed).
FAST_PIPELINE = {
    "POLL_MIN_INTERVAL_S": "0.1",
    "POLL_MAX_INTERVAL_S": "0.5",
    "POLL_LEASE_S": "3",
    "SWEEP_INTERVAL_S": "1",
    "BFL_MAX_ACTIVE_TASKS": "4",
    "LOG_LEVEL": "INFO",
}


def pipeline_env(emulator: Any = None, **overrides: str) -> dict[str, str]:
    """The environment for worker/beat processes: this test run's database, Redis, data dir
    and key prefix (from os.environ), the emulator's URL, fast pipeline settings, overrides."""
    env = dict(os.environ)
    env.update(FAST_PIPELINE)
    if emulator is not None:
        env["EMULATOR_URL"] = emulator.base_url
        # The emulator's polling URLs name localhost, as BFL's name a regional host: allowed
        # through configuration, as an operator would allow such a host.
        env["BFL_ALLOWED_HOSTS"] = "bfl.ai,localhost"
    env.pop("BFL_API_KEY", None)
    env.update(overrides)
    return env


class StudioProcess:
    """A `python -m app.cli <command>` child in its own process group, output in a log file."""

    command: tuple[str, ...] = ()
    ready_marker = ""

    def __init__(self, env: Mapping[str, str], *extra: str, name: str = "") -> None:
        self.env = dict(env)
        self.extra = extra
        self.name = name or self.command[0]
        self.proc: subprocess.Popen[bytes] | None = None
        handle, path = tempfile.mkstemp(prefix=f"studio-{self.name}-", suffix=".log")
        os.close(handle)
        self.log_path = Path(path)

    def start(self, timeout: float = 30.0) -> Self:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "app.cli", *self.command, *self.extra],
                env=self.env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if self.ready_marker:
            self._wait_for_marker(timeout)
        return self

    def _wait_for_marker(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited early:\n{self.log()}")
            if self.ready_marker in self.log():
                return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not become ready:\n{self.log()[-4000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def children(self) -> list[psutil.Process]:
        """The pool processes (for killing one mid-task)."""
        if self.proc is None or self.proc.poll() is not None:
            return []
        with contextlib.suppress(psutil.NoSuchProcess):
            return psutil.Process(self.proc.pid).children(recursive=True)
        return []

    def kill(self) -> None:
        """SIGKILL the whole process group: nothing gets to clean up or ack."""
        self._signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=10)

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self._signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=timeout)
        # Pool children may outlive their parent; the group goes in any case.
        self._signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)

    def _signal(self, sig: signal.Signals) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        with contextlib.suppress(OSError):
            self.log_path.unlink()


class WorkerProcess(StudioProcess):
    """`studio worker --concurrency N`: a real Celery worker on this run's Redis prefix."""

    command = ("worker",)
    ready_marker = " ready."

    def __init__(self, env: Mapping[str, str], concurrency: int = 2, name: str = "") -> None:
        super().__init__(env, "--concurrency", str(concurrency), name=name or "worker")


class BeatProcess(StudioProcess):
    """`studio beat`: runs the sweeper every SWEEP_INTERVAL_S."""

    command = ("beat",)
    ready_marker = "beat: Starting"


class WebProcess(StudioProcess):
    """`studio web --port P`: the web app (for webhook tests and benchmarks)."""

    command = ("web",)

    def __init__(self, env: Mapping[str, str], port: int) -> None:
        super().__init__(env, "--port", str(port), name="web")
        self.port = port

    def start(self, timeout: float = 30.0) -> Self:
        super().start(timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"web exited early:\n{self.log()}")
            try:
                httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1)
                return self
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError(f"web did not start:\n{self.log()[-4000:]}")


def queue_jobs(
    db: Session,
    user_id: uuid.UUID,
    team_id: uuid.UUID,
    *,
    prompt: str = "a lighthouse at dusk",
    count: int = 1,
    model: str = "flux-2-pro",
    wake: bool = True,
    **params: Any,
) -> list[Job]:
    """Create and commit jobs through the service, which sends the wake-ups after commit;
    `wake=False` drops them, as a crash between COMMIT and publish would (or for a test that
    plays the worker's part itself)."""
    jobs = create_jobs(
        db,
        user_id=user_id,
        team_id=team_id,
        model=model,
        params={"prompt": prompt, "width": 256, "height": 256, **params},
        count=count,
    )
    if not wake:
        messages.discard_pending(db)
    db.commit()
    return jobs


def submitting_job(db: Session, prompt: str = "a lighthouse at dusk") -> Job:
    """A new person's one job, claimed (`submitting`) and committed, with no wake-up sent: the
    test plays the worker's part from there."""
    person = make_person(db)
    (job,) = queue_jobs(db, person.user.id, person.team.id, prompt=prompt, wake=False)
    state.claim(db, job.id)
    db.commit()
    return job


def job_rows(engine: Engine, job_ids: Iterable[uuid.UUID]) -> list[Job]:
    """Fresh copies of the jobs, read in a short session of their own."""
    ids = list(job_ids)
    with Session(engine, expire_on_commit=False) as session:
        rows = session.scalars(select(Job).where(Job.id.in_(ids))).all()
        session.expunge_all()
    by_id = {row.id: row for row in rows}
    return [by_id[i] for i in ids if i in by_id]


def wait_for_terminal(
    engine: Engine,
    job_ids: Iterable[uuid.UUID],
    timeout: float = 60.0,
    *,
    on_tick: Any = None,
) -> list[Job]:
    """Wait until every job is in a terminal state; fail with their states otherwise."""
    ids = list(job_ids)
    deadline = time.monotonic() + timeout
    while True:
        rows = job_rows(engine, ids)
        if len(rows) == len(ids) and all(r.status in TERMINAL_STATUSES for r in rows):
            return rows
        if time.monotonic() > deadline:
            states: dict[str, int] = {}
            for r in rows:
                states[r.status] = states.get(r.status, 0) + 1
            raise AssertionError(f"jobs not finished after {timeout:.0f} s: {states}")
        if on_tick is not None:
            on_tick()
        time.sleep(0.1)


def wait_until(predicate: Any, timeout: float = 30.0, message: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {message}")
        time.sleep(0.05)


def accepted_posts(emulator: Any) -> dict[str, int]:
    """How many POSTs the emulator accepted per studio job (by prompt tag), from its log."""
    counts: dict[str, int] = {}
    for entry in emulator.submissions():
        key = str(entry["payload"].get("seed"))
        counts[key] = counts.get(key, 0) + 1
    return counts


def posts_per_job(emulator: Any, jobs: Iterable[Job]) -> dict[uuid.UUID, int]:
    """Accepted POSTs in the emulator's log for each job, matched by prompt and seed."""
    counts: dict[tuple[str, int | None], int] = {}
    for entry in emulator.submissions():
        key = (entry["payload"]["prompt"], entry["payload"].get("seed"))
        counts[key] = counts.get(key, 0) + 1
    return {j.id: counts.get((j.prompt, j.seed), 0) for j in jobs}


def assert_at_most_one_post(emulator: Any, jobs: Iterable[Job]) -> None:
    """Fail naming every job the emulator accepted more than one POST for."""
    extra = {job_id: n for job_id, n in posts_per_job(emulator, jobs).items() if n > 1}
    assert extra == {}, f"jobs POSTed more than once: {extra}"


class EmulatorProcess:
    """The BFL emulator as a process of its own on a fixed port, to stop and start again.

    Stopping it is an outage as the studio sees one: connections are refused. Starting it again
    on the same port is BFL coming back (with a fresh account: tasks do not survive). Settings
    come from EMULATOR_* variables in `env`; the admin endpoints are reached over HTTP.
    """

    def __init__(self, port: int, **config: str) -> None:
        self.port = port
        self.env = dict(os.environ)
        self.env.update({f"EMULATOR_{name.upper()}": value for name, value in config.items()})
        self.proc: subprocess.Popen[bytes] | None = None
        handle, path = tempfile.mkstemp(prefix="studio-emulator-", suffix=".log")
        os.close(handle)
        self.log_path = Path(path)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> Self:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "app.emulator", "--port", str(self.port)],
                env=self.env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the emulator exited early:\n{self.log_path.read_text()}")
            try:
                httpx.get(self.base_url + "/", timeout=1).raise_for_status()
                return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("the emulator did not start")

    def stop(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.proc = None

    def configure(self, **changes: Any) -> dict[str, Any]:
        """PATCH /_emulator/config."""
        answer = httpx.patch(self.base_url + "/_emulator/config", json=changes, timeout=5)
        answer.raise_for_status()
        result: dict[str, Any] = answer.json()
        return result

    def submissions(self) -> list[dict[str, Any]]:
        answer = httpx.get(self.base_url + "/_emulator/submissions", timeout=5)
        result: list[dict[str, Any]] = answer.json()["submissions"]
        return result

    def refusals(self) -> list[dict[str, Any]]:
        answer = httpx.get(self.base_url + "/_emulator/refusals", timeout=5)
        result: list[dict[str, Any]] = answer.json()["refusals"]
        return result

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        with contextlib.suppress(OSError):
            self.log_path.unlink()
