"""A whole flow through real processes leaves no secret in any log line.

The studio runs with a real-looking BFL key against the emulator served over TLS (so the key
really travels, as it would to api.bfl.ai): sign in, queue a job with a request id, let a real
worker submit, poll and store it (BFL calling the job's webhook URL back), use an API token, make
and open an invite link, scrape /metrics. Then every line the web, worker and beat processes
wrote is searched for the key, the session cookie, the SECRET_KEY, the API token, the invite
link's token and the webhook token, and checked to carry the request id and job id that tie it
together.
"""

from __future__ import annotations

import html
import json
import re
import secrets
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from app.auth.models import Role
from app.bfl.webhooks import sign_webhook_token
from app.embedded import free_port
from app.emulator import EmulatorConfig, create_app
from tests.factories import make_person
from tests.ops.conftest import sample
from tests.pipeline_support import (
    BeatProcess,
    WebProcess,
    WorkerProcess,
    pipeline_env,
    wait_for_terminal,
    wait_until,
)

pytestmark = [pytest.mark.pipeline, pytest.mark.slow]

BFL_KEY = "bfl-live-" + secrets.token_hex(16)
SECRET_KEY = "studio-secret-" + secrets.token_hex(24)


class TLSEmulator:
    """The BFL emulator on https://127.0.0.1:<port> with a throwaway self-signed certificate."""

    def __init__(self, config: EmulatorConfig, folder: Path) -> None:
        self.cert = folder / "emulator.crt"
        key = folder / "emulator.key"
        subprocess.run(
            [
                "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                "-keyout", str(key), "-out", str(self.cert),
            ],
            check=True,
            capture_output=True,
        )  # fmt: skip
        self.app = create_app(config)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self._sock = sock
        self.server = uvicorn.Server(
            uvicorn.Config(
                self.app,
                log_level="warning",
                access_log=False,
                ssl_certfile=str(self.cert),
                ssl_keyfile=str(key),
                timeout_graceful_shutdown=1,
            )
        )
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [sock]}, daemon=True
        )

    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def __enter__(self) -> TLSEmulator:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "the TLS emulator did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def tls_emulator(tmp_path: Path) -> Iterator[TLSEmulator]:
    # Only this exact key is accepted: a ready job proves the studio sent it.
    config = EmulatorConfig(api_key=BFL_KEY, latency_mean_s=0.3, latency_jitter_s=0.1)
    with TLSEmulator(config, tmp_path) as emulator:
        yield emulator


def _csrf(page: str, pattern: str) -> str:
    found = re.search(pattern, page)
    assert found, f"no anti-forgery token on the page ({pattern})"
    return html.unescape(found.group(1))


def test_no_secret_in_any_process_log(
    committed_db: Session, engine: Engine, tls_emulator: TLSEmulator, tmp_path: Path
) -> None:
    admin = make_person(committed_db, role=Role.ADMIN)
    committed_db.commit()
    samples = tmp_path / "metrics"
    samples.mkdir()
    port = free_port()
    env = pipeline_env(
        None,
        BFL_API_KEY=BFL_KEY,
        BFL_API_URL=tls_emulator.base_url,
        SSL_CERT_FILE=str(tls_emulator.cert),
        SECRET_KEY=SECRET_KEY,
        COOKIE_SECURE="false",
        LOG_LEVEL="DEBUG",
        LOG_FORMAT="auto",
        PROMETHEUS_MULTIPROC_DIR=str(samples),
        # Webhooks on: the emulator calls the job's webhook URL, token and all.
        PUBLIC_URL=f"http://127.0.0.1:{port}",
    )
    request_id = "flow-" + uuid.uuid4().hex[:12]
    with (
        WebProcess(env, port) as web,
        WorkerProcess(env, concurrency=2) as worker,
        BeatProcess(env) as beat,
        httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=15) as browser,
    ):
        login_page = browser.get("/login")
        signed_in = browser.post(
            "/login",
            data={
                "email": admin.user.email,
                "password": admin.password,
                "csrf_token": _csrf(login_page.text, r'name="csrf_token" value="([^"]+)"'),
            },
        )
        assert signed_in.status_code in (200, 303), signed_in.text[:300]
        session_cookie = browser.cookies.get("studio_session")
        assert session_cookie, "sign-in set no session cookie"
        ops = browser.get("/ops")
        assert ops.status_code == 200
        csrf = _csrf(ops.text, r'"X-CSRF-Token": "([^"]+)"')

        created = browser.post(
            "/api/v1/jobs",
            json={
                "model": "flux-2-pro",
                "prompt": "a lighthouse in a storm, log secrecy check",
                "params": {"width": 512, "height": 512},
            },
            headers={"X-CSRF-Token": csrf, "X-Request-ID": request_id},
        )
        assert created.status_code == 201, created.text
        assert created.headers["x-request-id"] == request_id
        job_id = created.json()["jobs"][0]["id"]

        token = browser.post(
            "/api/v1/tokens", json={"name": "log check"}, headers={"X-CSRF-Token": csrf}
        )
        assert token.status_code == 201, token.text
        api_secret = token.json()["secret"]
        listed = httpx.get(
            f"http://127.0.0.1:{port}/api/v1/jobs",
            headers={"Authorization": f"Bearer {api_secret}"},
            timeout=15,
        )
        assert listed.status_code == 200
        # A wrong token and a stray key in a header are logged requests too.
        httpx.get(
            f"http://127.0.0.1:{port}/api/v1/jobs",
            headers={"Authorization": f"Bearer {api_secret}x", "x-key": BFL_KEY},
            timeout=15,
        )

        (job,) = wait_for_terminal(engine, [uuid.UUID(job_id)], timeout=90)
        assert job.status == "ready", (job.status, job.error_code, job.error_message)
        webhook_token = sign_webhook_token(SECRET_KEY, job_id)
        woken = httpx.post(
            f"http://127.0.0.1:{port}/bfl/webhook/{job_id}/{webhook_token}?token={webhook_token}",
            json={"id": "x", "status": "Ready"},
            timeout=15,
        )
        assert woken.status_code == 202, woken.text

        # An invite link: made on the team page, opened and tried by someone else.
        invited = browser.post(
            "/team/invites", data={"email": "", "role": "admin", "csrf_token": csrf}
        )
        assert invited.status_code == 201, invited.text[:300]
        found = re.search(r'value="[^"]*/invite/([A-Za-z0-9_-]+)"', invited.text)
        assert found, "the team page showed no invite link"
        invite_token = found.group(1)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=15) as guest:
            page = guest.get(f"/invite/{invite_token}")
            assert page.status_code == 200, page.text[:300]
            refused = guest.post(
                f"/invite/{invite_token}",
                data={
                    "name": "Guest",
                    "email": "guest@example.com",
                    "password": "too short",
                    "password_again": "too short",
                    "csrf_token": _csrf(page.text, r'name="csrf_token" value="([^"]+)"'),
                },
            )
            assert refused.status_code == 400, refused.text[:300]

        # The worker's samples are counted by the web app's /metrics (one shared folder).
        def scrape() -> str:
            return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=15).text

        def counted() -> bool:
            text = scrape()
            return all(
                (sample(text, name, **labels) or 0) >= 1
                for name, labels in (
                    ("studio_bfl_request_seconds_count", {"kind": "submit", "outcome": "ok"}),
                    ("studio_bfl_request_seconds_count", {"kind": "download", "outcome": "ok"}),
                    ("studio_job_transitions_total", {"to_status": "ready"}),
                    ("studio_job_ready_to_stored_seconds_count", {}),
                )
            )

        wait_until(counted, timeout=15, message="the worker's samples in /metrics")
        browser.post("/logout", data={"csrf_token": csrf})
        logs = {"web": web.log(), "worker": worker.log(), "beat": beat.log()}

    every_line = "\n".join(logs.values())
    for name, secret in {
        "BFL_API_KEY": BFL_KEY,
        "SECRET_KEY": SECRET_KEY,
        "session cookie": session_cookie,
        "API token": api_secret,
        "invite token": invite_token,
        "webhook token": webhook_token,
    }.items():
        for process, text in logs.items():
            assert secret not in text, f"the {name} appears in the {process} log"
    # The link requests were logged, with their tokens blanked.
    assert "/invite/[redacted]" in logs["web"]
    assert f"/bfl/webhook/{job_id}/[redacted]" in logs["web"]
    # The logs are not just silent: they say what happened, with the ids that tie it together.
    records = []
    for line in every_line.splitlines():
        if line.startswith("{"):
            records.append(json.loads(line))
    assert any(
        r.get("event") == "request" and r.get("request_id") == request_id for r in records
    ), "the web process logged no request line with the caller's X-Request-ID"
    worker_records = [r for r in records if r.get("process") == "worker"]
    assert any(r.get("job_id") == job_id for r in worker_records), "no worker line has the job id"
    assert any(r.get("request_id") == request_id for r in worker_records), (
        "the request id did not travel from the web request to the worker's lines"
    )
