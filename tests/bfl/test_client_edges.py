"""Client behaviour the emulator does not produce: odd statuses, transport failures, headers."""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest
from PIL import Image

from app.bfl.client import BFLClient, TaskStatus, parse_retry_after
from app.bfl.errors import (
    ImageTooLarge,
    ImageWrongType,
    InsecureURL,
    NoResponse,
    NotSent,
    OutcomeUnknown,
    RateLimited,
    RateLimitInfo,
    RequestRejected,
    ServerFailed,
    ServiceUnavailable,
    UnexpectedResponse,
)

BASE = "https://api.example.test"
KEY = "edge-case-key-5d2c41f0a9b8e7d6"
Handler = Callable[[httpx.Request], httpx.Response]


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buffer, "PNG")
    return buffer.getvalue()


class Recorder:
    """A MockTransport that keeps every request it saw."""

    def __init__(self, handler: Handler) -> None:
        self.requests: list[httpx.Request] = []

        def record(request: httpx.Request) -> httpx.Response:
            self.requests.append(request)
            return handler(request)

        self.transport = httpx.MockTransport(record)


@pytest.fixture
def make_client() -> Iterator[Callable[[Handler], tuple[BFLClient, Recorder]]]:
    clients: list[BFLClient] = []

    def make(handler: Handler, **kwargs: object) -> tuple[BFLClient, Recorder]:
        recorder = Recorder(handler)
        client = BFLClient(BASE, KEY, transport=recorder.transport, **kwargs)  # type: ignore[arg-type]
        clients.append(client)
        return client, recorder

    yield make
    for client in clients:
        client.close()


def test_retry_after_seconds_and_http_date() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(" 2.5 ") == 2.5
    assert (
        parse_retry_after(format_datetime(now + timedelta(seconds=90), usegmt=True), now=now) == 90
    )
    assert (
        parse_retry_after(format_datetime(now - timedelta(seconds=90), usegmt=True), now=now) == 0
    )
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_retry_after_reads_every_http_date_form_and_ignores_garbage() -> None:
    # RFC 9110 §5.6.7: IMF-fixdate, and the obsolete RFC 850 and asctime forms, all in GMT.
    now = datetime(1994, 11, 6, 8, 48, 37, tzinfo=UTC)
    for form in (
        "Sun, 06 Nov 1994 08:49:37 GMT",
        "Sunday, 06-Nov-94 08:49:37 GMT",
        "Sun Nov  6 08:49:37 1994",
    ):
        assert parse_retry_after(form, now=now) == 60.0, form
    assert parse_retry_after("7200") == 7200.0  # honoured here; the studio caps it
    for garbage in ("", "   ", "-5", "1e3", "inf", "nan", "0x10", "5 seconds", "Sun, 99 Foo"):
        assert parse_retry_after(garbage) is None, garbage


def test_a_429_body_retry_after_is_used_when_the_header_is_absent_or_unreadable(
    make_client: Callable[..., tuple[BFLClient, Recorder]],
) -> None:
    body = {"error": "rate_limit_exceeded", "message": "Too many tasks", "retry_after": 5}
    for headers, expected in (
        ({}, 5.0),
        ({"Retry-After": "soon"}, 5.0),
        ({"Retry-After": "9"}, 9.0),
    ):
        client, _ = make_client(lambda r, h=headers: httpx.Response(429, json=body, headers=h))
        with pytest.raises(RateLimited) as caught:
            client.submit("flux-2-pro", {"prompt": "x"})
        assert caught.value.retry_after == expected
        assert "Too many tasks" in caught.value.message
    client, _ = make_client(
        lambda r: httpx.Response(429, json={"error": "x", "retry_after": "tomorrow"})
    )
    with pytest.raises(RateLimited) as caught:
        client.submit("flux-2-pro", {"prompt": "x"})
    assert caught.value.retry_after is None


def test_x_ratelimit_headers_are_read_on_a_429_and_on_an_accepted_submission(
    make_client: Callable[..., tuple[BFLClient, Recorder]],
) -> None:
    limits = {"X-RateLimit-Limit": "24", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "12"}
    client, _ = make_client(lambda r: httpx.Response(429, json={"detail": "busy"}, headers=limits))
    with pytest.raises(RateLimited) as caught:
        client.submit("flux-2-pro", {"prompt": "x"})
    assert caught.value.rate_limit == RateLimitInfo(limit=24, remaining=0, reset_after_s=12.0)

    epoch = {"x-ratelimit-limit": "3", "x-ratelimit-reset": str(int(time.time()) + 30)}
    client, _ = make_client(
        lambda r: httpx.Response(200, json={"id": "t1", "polling_url": None}, headers=epoch)
    )
    submission = client.submit("flux-2-pro", {"prompt": "x"})
    assert submission.rate_limit is not None
    assert (submission.rate_limit.limit, submission.rate_limit.remaining) == (3, None)
    assert 25 <= (submission.rate_limit.reset_after_s or 0) <= 30
    client, _ = make_client(lambda r: httpx.Response(200, json={"id": "t2"}))
    assert client.submit("flux-2-pro", {"prompt": "x"}).rate_limit is None


def test_a_503_on_submit_means_not_created_but_other_5xx_do_not(
    make_client: Callable[..., tuple[BFLClient, Recorder]],
) -> None:
    client, _ = make_client(lambda r: httpx.Response(503, text="Service Unavailable"))
    with pytest.raises(ServiceUnavailable) as caught:
        client.submit("flux-2-pro", {"prompt": "x"})
    assert caught.value.safe_to_retry and caught.value.status_code == 503
    assert isinstance(caught.value, ServerFailed)
    for status in (500, 502, 504):
        client, _ = make_client(lambda r, s=status: httpx.Response(s, text="oops"))
        with pytest.raises(ServerFailed) as failed:
            client.submit("flux-2-pro", {"prompt": "x"})
        assert not isinstance(failed.value, ServiceUnavailable)
        assert not failed.value.safe_to_retry


def test_rate_limited_reads_an_http_date(
    make_client: Callable[..., tuple[BFLClient, Recorder]],
) -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    client, _ = make_client(
        lambda r: httpx.Response(429, json={"detail": "busy"}, headers={"Retry-After": when})
    )
    with pytest.raises(RateLimited) as caught:
        client.submit("flux-2-pro", {"prompt": "x"})
    assert caught.value.retry_after is not None and 25 <= caught.value.retry_after <= 30


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("Pending", TaskStatus.PENDING),
        ("Queued", TaskStatus.PENDING),
        ("Processing", TaskStatus.PENDING),
        ("something new", TaskStatus.PENDING),
        (None, TaskStatus.PENDING),
        ("READY", TaskStatus.READY),
        ("Request Moderated", TaskStatus.REQUEST_MODERATED),
        ("Content_Moderated", TaskStatus.CONTENT_MODERATED),
        ("Error", TaskStatus.ERROR),
        ("Task not found", TaskStatus.NOT_FOUND),
    ],
)
def test_status_spellings(
    make_client: Callable[..., tuple[BFLClient, Recorder]],
    status: str | None,
    expected: TaskStatus,
) -> None:
    body = {"id": "t1", "status": status, "result": {"sample": f"{BASE}/s.png", "seed": 3}}
    client, _ = make_client(lambda r: httpx.Response(200, json=body))
    assert client.poll(None, "t1").status is expected


def test_percentage_progress_becomes_a_fraction(
    make_client: Callable[..., tuple[BFLClient, Recorder]],
) -> None:
    client, _ = make_client(
        lambda r: httpx.Response(200, json={"status": "Pending", "progress": 40})
    )
    assert client.poll(None, "t1").progress == pytest.approx(0.4)


def test_ready_without_an_image_url_is_unexpected(
    make_client: Callable[..., tuple[BFLClient, Recorder]],
) -> None:
    client, _ = make_client(lambda r: httpx.Response(200, json={"status": "Ready", "result": {}}))
    with pytest.raises(UnexpectedResponse) as caught:
        client.poll(None, "t1")
    assert caught.value.safe_to_retry


def test_accepted_submission_without_an_id_is_outcome_unknown(
    make_client: Callable[..., tuple[BFLClient, Recorder]],
) -> None:
    client, _ = make_client(lambda r: httpx.Response(200, text="<html>ok</html>"))
    with pytest.raises(OutcomeUnknown):
        client.submit("flux-2-pro", {"prompt": "x"})


def test_gateway_error_on_submit_is_unsafe_and_on_poll_safe(
    make_client: Callable[..., tuple[BFLClient, Recorder]],
) -> None:
    client, _ = make_client(lambda r: httpx.Response(502, text="Bad Gateway"))
    with pytest.raises(ServerFailed) as on_submit:
        client.submit("flux-2-pro", {"prompt": "x"})
    with pytest.raises(ServerFailed) as on_poll:
        client.poll(None, "t1")
    assert not on_submit.value.safe_to_retry
    assert on_poll.value.safe_to_retry


def test_string_detail_becomes_the_message(
    make_client: Callable[..., tuple[BFLClient, Recorder]],
) -> None:
    client, _ = make_client(lambda r: httpx.Response(400, json={"detail": "prompt too long"}))
    with pytest.raises(RequestRejected) as caught:
        client.submit("flux-2-pro", {"prompt": "x"})
    assert "prompt too long" in caught.value.message


def _raiser(exc_type: type[httpx.TransportError]) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc_type("simulated", request=request)

    return handler


@pytest.mark.parametrize(
    ("exc_type", "on_submit", "on_poll"),
    [
        (httpx.ConnectError, NotSent, NotSent),
        (httpx.ConnectTimeout, NotSent, NotSent),
        (httpx.PoolTimeout, NotSent, NotSent),
        (httpx.WriteTimeout, NotSent, NotSent),
        (httpx.WriteError, NotSent, NotSent),
        (httpx.ReadTimeout, OutcomeUnknown, NoResponse),
        (httpx.ReadError, OutcomeUnknown, NoResponse),
        (httpx.RemoteProtocolError, OutcomeUnknown, NoResponse),
    ],
)
def test_transport_failures_map_to_sent_or_not_sent(
    make_client: Callable[..., tuple[BFLClient, Recorder]],
    exc_type: type[httpx.TransportError],
    on_submit: type[Exception],
    on_poll: type[Exception],
) -> None:
    client, _ = make_client(_raiser(exc_type))
    with pytest.raises(on_submit):
        client.submit("flux-2-pro", {"prompt": "x"})
    with pytest.raises(on_poll):
        client.credits()


def test_key_goes_to_bfl_but_never_to_result_links(
    make_client: Callable[..., tuple[BFLClient, Recorder]],
) -> None:
    png = _png()

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/delivery"):
            return httpx.Response(200, content=png, headers={"content-type": "image/png"})
        return httpx.Response(200, json={"credits": 12.5})

    client, recorder = make_client(handler)
    client.credits()
    client.fetch_image(f"{BASE}/delivery/abc.png?sig=1")
    bfl_call, download = recorder.requests
    assert bfl_call.headers["x-key"] == KEY
    assert "x-key" not in download.headers


def test_insecure_polling_url_is_not_contacted(
    make_client: Callable[..., tuple[BFLClient, Recorder]],
) -> None:
    client, recorder = make_client(lambda r: httpx.Response(200, json={"status": "Pending"}))
    client.poll("http://regional.example.test/v1/get_result?id=t1", "t1")
    assert [str(r.url) for r in recorder.requests] == [f"{BASE}/v1/get_result?id=t1"]


def test_streamed_image_is_cut_off_past_the_limit(
    make_client: Callable[..., tuple[BFLClient, Recorder]],
) -> None:
    def chunks() -> Iterator[bytes]:
        yield _png()
        while True:
            yield b"\0" * 4096

    def handler(request: httpx.Request) -> httpx.Response:
        # No Content-Length: only counting the streamed bytes can stop this.
        return httpx.Response(200, content=chunks(), headers={"content-type": "image/png"})

    client, _ = make_client(handler, max_image_bytes=20_000)
    with pytest.raises(ImageTooLarge):
        client.fetch_image(f"{BASE}/delivery/x.png")


def test_image_type_is_checked_against_the_bytes(
    make_client: Callable[..., tuple[BFLClient, Recorder]],
) -> None:
    png = _png()

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/octet.bin":
            return httpx.Response(
                200, content=png, headers={"content-type": "application/octet-stream"}
            )
        return httpx.Response(200, content=b"<html></html>", headers={"content-type": "image/png"})

    client, _ = make_client(handler)
    assert client.fetch_image(f"{BASE}/octet.bin").content_type == "image/png"
    with pytest.raises(ImageWrongType):
        client.fetch_image(f"{BASE}/liar.png")


def test_redirect_to_plain_http_is_refused(
    make_client: Callable[..., tuple[BFLClient, Recorder]],
) -> None:
    client, _ = make_client(
        lambda r: httpx.Response(302, headers={"location": "http://cdn.example.test/a.png"})
    )
    with pytest.raises(InsecureURL):
        client.fetch_image(f"{BASE}/delivery/a.png")


def test_model_names_are_checked_before_building_a_url(
    make_client: Callable[..., tuple[BFLClient, Recorder]],
) -> None:
    client, recorder = make_client(lambda r: httpx.Response(200, json={"id": "x"}))
    with pytest.raises(ValueError, match="model"):
        client.submit("../v1/credits", {"prompt": "x"})
    assert recorder.requests == []


def test_blank_key_is_refused() -> None:
    with pytest.raises(ValueError, match="key"):
        BFLClient(BASE, " ")
