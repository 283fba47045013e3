"""A real `studio web` process stays flat in memory when members send oversized bodies.

Each body is streamed in chunks over a raw socket (no Content-Length, so nothing can be
refused up front): the web process must count bytes as they arrive and answer 413 before it
holds more than its limit. psutil measures the process's resident memory before and after.
"""

from __future__ import annotations

import json
import os
import select
import socket
import time
from collections.abc import Iterator

import psutil
import pytest
from sqlalchemy.orm import Session

from app.auth.service import start_session
from app.auth.tokens import issue_token
from app.embedded import free_port
from tests.factories import make_person
from tests.pipeline_support import WebProcess

MB = 1024 * 1024
#: Resident memory the web process may gain over all the oversized requests together.
GROWTH_LIMIT = 60 * MB


def _rss(pid: int) -> int:
    process = psutil.Process(pid)
    return process.memory_info().rss + sum(c.memory_info().rss for c in process.children(True))


def _read_response(sock: socket.socket) -> tuple[int, bytes]:
    """Read an HTTP response until it is complete or the server closes; (status, body)."""
    sock.settimeout(30)
    data = b""
    while True:
        try:
            piece = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not piece:
            break
        data += piece
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep:
            length = next(
                (
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ),
                None,
            )
            if length is not None and len(body) >= length:
                break
    assert data, "the server answered nothing"
    status = int(data.split(b" ", 2)[1])
    return status, data.partition(b"\r\n\r\n")[2]


def stream_request(
    port: int, path: str, headers: dict[str, str], chunks: Iterator[bytes]
) -> tuple[int, bytes, int]:
    """POST `chunks` with chunked transfer encoding, stopping once the server answers.

    Returns (status, response body, bytes of body sent).
    """
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sent = 0
    try:
        lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Transfer-Encoding: chunked"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        for chunk in chunks:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                break
            try:
                sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            except (BrokenPipeError, ConnectionResetError, TimeoutError):
                break
            sent += len(chunk)
        else:
            sock.sendall(b"0\r\n\r\n")
        status, body = _read_response(sock)
    finally:
        sock.close()
    return status, body, sent


def big_json(total: int) -> Iterator[bytes]:
    """A syntactically plausible job request of `total` bytes, made as it is sent."""
    yield b'{"model": "flux-2-pro", "prompt": "a lighthouse", "reference_images": ["'
    piece = b"A" * (256 * 1024)
    for _ in range(total // len(piece)):
        yield piece
    yield b'"]}'


def big_multipart(boundary: str, files: int, size: int, extra: dict[str, str]) -> Iterator[bytes]:
    """A multipart job request with `files` reference images of `size` bytes each."""
    for name, value in extra.items():
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        ).encode()
    piece = b"\x89PNG" + b"\0" * (256 * 1024 - 4)
    for index in range(files):
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="reference_images"; '
            f'filename="ref{index}.png"\r\nContent-Type: image/png\r\n\r\n'
        ).encode()
        for _ in range(size // len(piece)):
            yield piece
        yield b"\r\n"
    yield f"--{boundary}--\r\n".encode()


@pytest.mark.skipif(not hasattr(os, "killpg"), reason="needs process groups")
def test_oversized_bodies_are_refused_while_streaming_and_memory_stays_flat(
    committed_db: Session,
) -> None:
    person = make_person(committed_db)
    secret = issue_token(
        committed_db, user_id=person.user.id, team_id=person.team.id, name="memory"
    ).secret
    raw_session, session = start_session(committed_db, person.user, team_id=person.team.id)
    committed_db.commit()
    bearer = {"Authorization": f"Bearer {secret}"}
    boundary = "studio-test-boundary"
    multipart = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    browser = {
        # COOKIE_SECURE is on, so the cookie has the __Host- name; plain http still carries it.
        "Cookie": f"__Host-studio_session={raw_session}",
        "X-CSRF-Token": session.csrf_token,
        "HX-Request": "true",
    }
    port = free_port()
    with WebProcess(dict(os.environ), port) as web:
        assert web.proc is not None
        # Warm up every code path once (imports, templates, connection pools) before measuring.
        for _ in range(2):
            status, _, _ = stream_request(
                port,
                "/api/v1/jobs",
                {**bearer, "Content-Type": "application/json"},
                iter([b'{"model": "nope", "prompt": "x"}']),
            )
            assert status == 422
            status, _, _ = stream_request(
                port,
                "/api/v1/jobs",
                {**bearer, **multipart},
                big_multipart(boundary, 1, 512 * 1024, {"model": "nope", "prompt": "x"}),
            )
            assert status == 422
        time.sleep(0.5)
        before = _rss(web.proc.pid)

        # 200 MB of JSON to POST /api/v1/jobs.
        status, body, sent = stream_request(
            port, "/api/v1/jobs", {**bearer, "Content-Type": "application/json"}, big_json(200 * MB)
        )
        assert status == 413, body[:300]
        error = json.loads(body)["error"]
        assert error["code"] == "too_large"
        assert "32 MiB" in error["message"] and "MAX_JOB_REQUEST_BYTES" in error["message"]
        assert sent < 100 * MB, f"the server read {sent} bytes before refusing"

        # 30 reference images of 15 MB each, through the API and through the generate page.
        fields = {"model": "flux-2-pro", "prompt": "a lighthouse"}
        status, body, sent = stream_request(
            port,
            "/api/v1/jobs",
            {**bearer, **multipart},
            big_multipart(boundary, 30, 15 * MB, fields),
        )
        assert status == 413, body[:300]
        assert json.loads(body)["error"]["code"] == "too_large"
        assert sent < 100 * MB
        status, body, sent = stream_request(
            port,
            "/generate",
            {**browser, **multipart},
            big_multipart(boundary, 30, 15 * MB, fields),
        )
        assert status == 413, body[:300]
        assert b"MAX_JOB_REQUEST_BYTES" in body
        assert sent < 100 * MB

        # 200 MB to an ordinary route (1 MiB limit), unauthenticated: refused just the same.
        status, body, sent = stream_request(
            port,
            "/login",
            {"Content-Type": "application/x-www-form-urlencoded"},
            iter([b"email=a%40b.c&password=" + b"x" * MB] * 200),
        )
        assert status == 413, body[:300]
        assert sent < 50 * MB

        time.sleep(0.5)
        after = _rss(web.proc.pid)
        assert web.proc.poll() is None, "the web process died"

    growth = after - before
    assert growth < GROWTH_LIMIT, f"web process grew by {growth / MB:.0f} MB ({before=}, {after=})"
