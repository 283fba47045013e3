"""Fixtures for the BFL client tests: a live emulator over real HTTP and a client pointed at it."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from app.bfl.client import BFLClient, PollResult, Submission
from app.emulator import EmulatorConfig, EmulatorServer

API_KEY = "bfl-test-key-7f3a9c2e51d04b8a6c1e"
#: The emulator hands out polling URLs on the other loopback name (127.0.0.1 <-> localhost),
#: as BFL hands out regional hosts; the client follows them only when allowed.
EMULATOR_POLLING_HOSTS = ("bfl.ai", "localhost", "127.0.0.1")


@pytest.fixture(scope="session")
def emulator_server() -> Iterator[EmulatorServer]:
    config = EmulatorConfig(latency_mean_s=0.05, latency_jitter_s=0.0, random_seed=7)
    with EmulatorServer(config) as server:
        yield server


@pytest.fixture
def emulator(emulator_server: EmulatorServer) -> Iterator[EmulatorServer]:
    emulator_server.reset()
    yield emulator_server
    emulator_server.reset()


@pytest.fixture
def client(emulator: EmulatorServer) -> Iterator[BFLClient]:
    with BFLClient(
        emulator.base_url,
        API_KEY,
        allow_insecure_urls=True,
        timeout=httpx.Timeout(5.0),
        allowed_hosts=EMULATOR_POLLING_HOSTS,
    ) as bfl:
        yield bfl


@pytest.fixture
def closed_port() -> int:
    """A local port nobody listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def wait_done(client: BFLClient) -> Callable[[Submission], PollResult]:
    """Poll a submission until it reaches a terminal state (a few seconds at most)."""

    def wait(submission: Submission) -> PollResult:
        deadline = time.monotonic() + 5
        while True:
            result = client.poll(submission.polling_url, submission.id)
            if result.is_terminal or time.monotonic() > deadline:
                return result
            time.sleep(0.02)

    return wait
