"""Fixtures of the pipeline tests: the emulator, a worker process, people to own jobs."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.orm import Session

from app.emulator import EmulatorConfig, EmulatorServer
from app.settings import get_settings
from tests.factories import Person, make_person
from tests.pipeline_support import WorkerProcess, pipeline_env

#: Short BFL latencies keep the suite quick; tests that need others configure the emulator.
EMULATOR_DEFAULTS = {"latency_mean_s": 0.3, "latency_jitter_s": 0.1}


@pytest.fixture(scope="module")
def emulator_server() -> Iterator[EmulatorServer]:
    """One emulator per test module; `emulator` resets it for each test."""
    with EmulatorServer(EmulatorConfig(**EMULATOR_DEFAULTS)) as server:
        yield server


@pytest.fixture
def emulator(emulator_server: EmulatorServer) -> EmulatorServer:
    emulator_server.reset()
    return emulator_server


@pytest.fixture(scope="module")
def worker(emulator_server: EmulatorServer) -> Iterator[WorkerProcess]:
    """A real `studio worker --concurrency 2` for the module, on this run's Redis prefix."""
    # Wake-ups and polls earlier modules' workers left unhandled (this run's queues only)
    # would otherwise reach this module's jobs.
    import app.celery_app as celery_module

    celery_module.app.control.purge()
    with WorkerProcess(pipeline_env(emulator_server), concurrency=2) as process:
        yield process


@pytest.fixture
def person(committed_db: Session) -> Person:
    found = make_person(committed_db)
    committed_db.commit()
    return found


@pytest.fixture
def settings_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """Change settings of this test process (setenv), restored afterwards."""
    get_settings.cache_clear()
    yield monkeypatch
    monkeypatch.undo()
    get_settings.cache_clear()
