"""Fixtures for the emulator tests: one live emulator, reset around every test, and raw HTTP."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from app.emulator import EmulatorConfig, EmulatorServer

KEY = {"x-key": "emulator-test-key-0c1d2e3f"}


@pytest.fixture(scope="session")
def emulator_server() -> Iterator[EmulatorServer]:
    config = EmulatorConfig(latency_mean_s=0.05, latency_jitter_s=0.0, random_seed=3)
    with EmulatorServer(config) as server:
        yield server


@pytest.fixture
def emulator(emulator_server: EmulatorServer) -> Iterator[EmulatorServer]:
    emulator_server.reset()
    yield emulator_server
    emulator_server.reset()


@pytest.fixture
def http(emulator: EmulatorServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emulator.base_url, headers=KEY, timeout=5.0) as client:
        yield client
