"""`studio up` as a newcomer runs it: embedded services, a job that finishes, a clean stop,
a SECRET_KEY of its own kept in DATA_DIR and invite links that point at it."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from app.bfl.webhooks import sign_webhook_token
from app.embedded import free_port
from app.settings import DEV_SECRET_KEY

pytestmark = [pytest.mark.slow, pytest.mark.pipeline]

CREDENTIALS = re.compile(r"sign in as (\S+) with password (\S+)")
HX_CSRF = re.compile(r'"X-CSRF-Token":\s*"([^"]+)"')
FORM_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


class Studio:
    """A `studio up` process in its own folder, with its output collected as it runs."""

    def __init__(self, folder: Path, port: int) -> None:
        env = {
            k: v
            for k, v in os.environ.items()
            if k
            not in {
                "DATABASE_URL",
                "REDIS_URL",
                "DATA_DIR",
                "BFL_API_KEY",
                "CELERY_KEY_PREFIX",
                "PROMETHEUS_MULTIPROC_DIR",
                "STUDIO_TEST_CONFIGURED",
                "SECRET_KEY",
                "PUBLIC_URL",
            }
        }
        env["EMULATOR_URL"] = f"http://127.0.0.1:{free_port()}"
        self.folder = folder
        self.output: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "up", "--port", str(port), "--workers", "2"],
            cwd=folder,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)

    def text(self) -> str:
        return "".join(self.output)

    def processes(self) -> list[psutil.Process]:
        """Every process started for this studio: descendants, and daemons using its folder."""
        found: dict[int, psutil.Process] = {}
        with contextlib.suppress(psutil.NoSuchProcess):
            for child in psutil.Process(self.process.pid).children(recursive=True):
                found[child.pid] = child
        for proc in psutil.process_iter(["pid", "cmdline"]):
            cmdline = " ".join(proc.info.get("cmdline") or [])
            if str(self.folder) in cmdline:
                found[proc.pid] = proc
        return list(found.values())


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture
def studio(tmp_path: Path) -> Iterator[tuple[Studio, str]]:
    port = free_port()
    running = Studio(tmp_path, port)
    try:
        yield running, f"http://127.0.0.1:{port}"
    finally:
        if running.process.poll() is None:
            running.process.send_signal(signal.SIGINT)
            try:
                running.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                running.process.kill()
        for proc in running.processes():
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()


def _cookies(response: httpx.Response, jar: dict[str, str]) -> None:
    # Session cookies are Secure; browsers accept them on http://localhost, but httpx does
    # not send Secure cookies over plain http, so the test carries them itself.
    for header in response.headers.get_list("set-cookie"):
        name, _, rest = header.partition("=")
        value = rest.split(";", 1)[0]
        if "max-age=0" in header.lower() or not value:
            jar.pop(name, None)
        else:
            jar[name] = value


def _cookie_header(jar: dict[str, str]) -> dict[str, str]:
    return {"cookie": "; ".join(f"{k}={v}" for k, v in jar.items())}


def _wait_ready(studio: Studio, base: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if studio.process.poll() is not None:
            pytest.fail(f"studio up exited early:\n{studio.text()[-4000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        time.sleep(0.5)
    pytest.fail(f"/readyz never answered 200:\n{studio.text()[-4000:]}")


def test_studio_up_runs_a_job_and_stops_cleanly(studio: tuple[Studio, str]) -> None:
    running, base = studio
    _wait_ready(running, base, timeout=180)

    deadline = time.monotonic() + 30
    while not CREDENTIALS.search(running.text()) and time.monotonic() < deadline:
        time.sleep(0.2)
    found = CREDENTIALS.search(running.text())
    assert found, f"the first run printed no sign-in details:\n{running.text()[-3000:]}"
    email, password = found.group(1), found.group(2)
    assert "emulator" in running.text().lower()

    jar: dict[str, str] = {}
    with httpx.Client(base_url=base, timeout=10) as client:
        page = client.get("/login")
        _cookies(page, jar)
        form_token = FORM_CSRF.search(page.text)
        assert form_token, "the sign-in form carries no anti-forgery token"
        signed_in = client.post(
            "/login",
            data={"email": email, "password": password, "csrf_token": form_token.group(1)},
            headers=_cookie_header(jar),
        )
        assert signed_in.status_code in (302, 303), signed_in.text[:500]
        _cookies(signed_in, jar)

        home = client.get("/", headers=_cookie_header(jar))
        assert home.status_code == 200
        assert "synthetic" in home.text.lower(), "the emulator banner is missing"
        csrf = HX_CSRF.search(home.text)
        assert csrf, "the signed-in page carries no anti-forgery token"
        headers = {**_cookie_header(jar), "x-csrf-token": csrf.group(1)}

        created = client.post(
            "/api/v1/jobs",
            json={
                "model": "flux-2-pro",
                "prompt": "a lighthouse at dawn, seen from the sea",
                "params": {"width": 512, "height": 512, "seed": 7},
            },
            headers=headers,
        )
        assert created.status_code == 201, created.text
        job_id = created.json()["jobs"][0]["id"]

        status = ""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            job = client.get(f"/api/v1/jobs/{job_id}", headers=headers).json()
            status = job["status"]
            if status in ("ready", "failed", "moderated", "cancelled"):
                break
            time.sleep(0.5)
        assert status == "ready", f"job ended {status!r}: {job}\n{running.text()[-3000:]}"
        image = client.get(f"/api/v1/images/{job_id}/original", headers=headers)
        assert image.status_code == 200
        assert image.headers["content-type"] == "image/jpeg"
        assert image.content[:2] == b"\xff\xd8"

        # No SECRET_KEY was given: the studio made one, private, and every process signs
        # with it (a webhook token made with it is accepted; one made with the built-in
        # development value is not).
        key_file = running.folder / "var" / "secret_key"
        assert key_file.is_file(), "studio up kept no secret key in DATA_DIR"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        key = key_file.read_text().strip()
        assert len(key) >= 48 and key != DEV_SECRET_KEY
        forged = client.post(f"/bfl/webhook/{job_id}/{sign_webhook_token(DEV_SECRET_KEY, job_id)}")
        assert forged.status_code == 404
        genuine = client.post(f"/bfl/webhook/{job_id}/{sign_webhook_token(key, job_id)}")
        assert genuine.status_code == 202

        # Invite links point at the local address studio up runs at, not the Host header.
        invited = client.post(
            "/team/invites",
            data={"role": "member", "email": "", "csrf_token": csrf.group(1)},
            headers={**_cookie_header(jar), "host": "evil.example"},
        )
        assert invited.status_code == 201, invited.text[:500]
        port = base.rsplit(":", 1)[1]
        assert f'value="http://localhost:{port}/invite/' in invited.text
        assert "evil.example" not in invited.text

    started = running.processes()
    names = " ".join(" ".join(p.cmdline()) for p in started if _alive(p))
    for part in ("web", "worker", "beat", "emulator", "redis-server", "postgres"):
        assert part in names, f"no {part} process among the studio's children"

    running.process.send_signal(signal.SIGINT)
    assert running.process.wait(timeout=90) == 0, running.text()[-3000:]
    time.sleep(1)
    survivors = [p for p in started + running.processes() if _alive(p)]
    assert survivors == [], f"left running after Ctrl-C: {[p.cmdline() for p in survivors]}"
    assert (running.folder / "var" / "pgdata").is_dir(), "the database folder is not kept"
    assert "using the one kept in" in running.text()
    # The next run of this folder would read the same key (tests/foundation/test_secret_key.py
    # runs ensure_secret_key twice); here the file is untouched by the stop.
    assert key_file.read_text().strip() == key
