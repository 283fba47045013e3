"""SECRET_KEY: `studio up` keeps a random one in DATA_DIR; production commands refuse the
built-in development value and say how to set one."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from app.cli import ensure_secret_key
from app.settings import DEV_SECRET_KEY


def test_the_key_is_made_once_private_and_reused(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    first = ensure_secret_key(data_dir)
    path = data_dir / "secret_key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first) >= 48 and first != DEV_SECRET_KEY
    assert ensure_secret_key(data_dir) == first
    assert path.read_text().strip() == first
    assert ensure_secret_key(tmp_path / "elsewhere") != first


@pytest.mark.parametrize("command", ["web", "worker", "beat"])
@pytest.mark.parametrize("value", [None, DEV_SECRET_KEY])
def test_production_commands_refuse_the_development_key(
    command: str, value: str | None, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "SECRET_KEY"}
    if value is not None:
        env["SECRET_KEY"] = value
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", command],
        cwd=tmp_path,  # no .env here
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "built-in development SECRET_KEY" in result.stderr
    assert "Set SECRET_KEY to a long random value" in result.stderr
