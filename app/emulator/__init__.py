"""A BFL-compatible HTTP server for development, tests and benchmarks (synthetic images)."""

from app.emulator.api import create_app
from app.emulator.config import EmulatorConfig
from app.emulator.server import EmulatorServer, run

__all__ = ["EmulatorConfig", "EmulatorServer", "create_app", "run"]
