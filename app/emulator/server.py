"""Runs the emulator: `run()` for a process of its own, `EmulatorServer` for tests."""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType
from typing import Any, Self

import uvicorn

from app.emulator.api import create_app
from app.emulator.config import EmulatorConfig
from app.emulator.service import EmulatorService


def run(host: str = "127.0.0.1", port: int = 8765, config: EmulatorConfig | None = None) -> None:
    """Serve the emulator until interrupted."""
    uvicorn.run(create_app(config), host=host, port=port, log_level="info")


class EmulatorServer:
    """The emulator on a free 127.0.0.1 port in a background thread.

    ```
    with EmulatorServer(EmulatorConfig(latency_mean_s=0.1)) as emulator:
        client = BFLClient(emulator.base_url, "key", allow_insecure_urls=True)
    ```
    """

    def __init__(self, config: EmulatorConfig | None = None, *, host: str = "127.0.0.1") -> None:
        self.host = host
        self.app = create_app(config)
        self.service: EmulatorService = self.app.state.emulator
        self.port = 0
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def config(self) -> EmulatorConfig:
        """The live configuration (change it with `configure`)."""
        return self.service.config

    def configure(self, **changes: Any) -> EmulatorConfig:
        """Change settings at runtime, as PATCH /_emulator/config does."""
        new = self.service.update_config(changes)
        self.app.state.webhooks.poke()
        return new

    def reset(self) -> None:
        """Forget tasks and logs; restore the starting configuration and balance."""
        self.service.reset()

    def submissions(self) -> list[dict[str, Any]]:
        return self.service.submissions()

    def start(self) -> Self:
        if self._thread is not None:
            return self
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            lifespan="on",
            timeout_graceful_shutdown=1,
            access_log=False,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="bfl-emulator", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the BFL emulator did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = None
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
