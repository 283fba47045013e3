"""The real BFL client against the emulator over real HTTP: every status and every error class."""

from __future__ import annotations

import io
from collections.abc import Callable
from decimal import Decimal
from urllib.parse import urlsplit

import httpx
import pytest
from PIL import Image

from app.bfl.catalogue import estimate_cost, validate_request
from app.bfl.client import BFLClient, PollResult, Submission, TaskStatus
from app.bfl.errors import (
    AuthFailed,
    ImageTooLarge,
    ImageWrongType,
    InsecureURL,
    InsufficientCredits,
    NotSent,
    OutcomeUnknown,
    RateLimited,
    RequestRejected,
    ResultUnavailable,
    ServerFailed,
)
from app.emulator import EmulatorServer
from tests.bfl.conftest import API_KEY, EMULATOR_POLLING_HOSTS

Wait = Callable[[Submission], PollResult]


def _submit(
    client: BFLClient, prompt: str = "a lighthouse at dusk", **params: object
) -> Submission:
    return client.submit("flux-2-pro", validate_request("flux-2-pro", {"prompt": prompt, **params}))


def test_submit_poll_and_download_a_ready_image(
    client: BFLClient, emulator: EmulatorServer, wait_done: Wait
) -> None:
    emulator.configure(latency_mean_s=0.4)
    submission = _submit(client, seed=1234, width=512, height=768, output_format="png")

    assert submission.id
    assert submission.cost == estimate_cost("flux-2-pro", 512, 768).credits
    assert submission.output_mp is not None
    assert submission.polling_url is not None
    assert urlsplit(submission.polling_url).netloc != urlsplit(emulator.base_url).netloc

    first = client.poll(submission.polling_url, submission.id)
    assert first.status is TaskStatus.PENDING
    assert first.progress is not None and 0.0 <= first.progress < 1.0

    result = wait_done(submission)
    assert result.status is TaskStatus.READY
    assert result.seed == 1234
    assert result.sample_url is not None

    image = client.fetch_image(result.sample_url)
    assert image.content_type == "image/png"
    with Image.open(io.BytesIO(image.content)) as picture:
        assert picture.format == "PNG"
        assert picture.size == (512, 768)
    # The signed link is the credential: the key must not travel with the download.
    assert [d["x_key_present"] for d in emulator.service.deliveries()] == [False]
    assert len(emulator.submissions()) == 1


def test_poll_uses_the_polling_url_it_was_given(
    client: BFLClient, emulator: EmulatorServer, closed_port: int
) -> None:
    submission = _submit(client)
    # A client whose base URL is dead can only succeed by polling the polling_url.
    with BFLClient(
        f"http://127.0.0.1:{closed_port}",
        API_KEY,
        allow_insecure_urls=True,
        timeout=2.0,
        allowed_hosts=EMULATOR_POLLING_HOSTS,
    ) as elsewhere:
        result = elsewhere.poll(submission.polling_url, submission.id)
    assert result.status in (TaskStatus.PENDING, TaskStatus.READY)


def test_poll_falls_back_to_get_result_on_the_base_url(
    client: BFLClient, emulator: EmulatorServer, closed_port: int, wait_done: Wait
) -> None:
    submission = _submit(client)
    assert client.poll(None, submission.id).status in (TaskStatus.PENDING, TaskStatus.READY)
    unreachable = f"http://127.0.0.1:{closed_port}/v1/get_result?id={submission.id}"
    assert client.poll(unreachable, submission.id).status in (
        TaskStatus.PENDING,
        TaskStatus.READY,
    )


@pytest.mark.parametrize(
    ("trigger", "status", "words"),
    [
        ("[[request-moderated]]", TaskStatus.REQUEST_MODERATED, "moderation"),
        ("[[content-moderated]]", TaskStatus.CONTENT_MODERATED, "moderation"),
        ("[[error]]", TaskStatus.ERROR, "Emulated generation failure"),
        ("[[not-found]]", TaskStatus.NOT_FOUND, "does not know"),
    ],
)
def test_terminal_failure_statuses(
    client: BFLClient, wait_done: Wait, trigger: str, status: TaskStatus, words: str
) -> None:
    result = wait_done(_submit(client, f"a cat {trigger}"))
    assert result.status is status
    assert result.sample_url is None
    assert result.message is not None and words in result.message


def test_moderation_reasons_and_bfl_s_own_words_are_parsed(
    client: BFLClient, emulator: EmulatorServer, wait_done: Wait
) -> None:
    emulator.configure(moderation_reasons=["Derivative Works Filter", "Public Figures Filter"])
    moderated = wait_done(_submit(client, "a cat [[request-moderated]]"))
    assert moderated.moderation_reasons == ("Derivative Works Filter", "Public Figures Filter")
    assert moderated.explanation == "Derivative Works Filter, Public Figures Filter"
    failed = wait_done(_submit(client, "a cat [[error]]"))
    assert failed.moderation_reasons == ()
    # BFL's words alone, without the "error:" key or our own sentence around them.
    assert failed.explanation == "Emulated generation failure (trigger word)"
    ready = wait_done(_submit(client, "a cat"))
    assert (ready.moderation_reasons, ready.explanation) == ((), None)


def test_unknown_and_expired_tasks_are_not_found(
    client: BFLClient, emulator: EmulatorServer, wait_done: Wait
) -> None:
    assert client.poll(None, "no-such-task").status is TaskStatus.NOT_FOUND
    submission = _submit(client)
    assert wait_done(submission).status is TaskStatus.READY
    emulator.service.advance_clock(emulator.config.task_ttl_s + 1)
    assert client.poll(submission.polling_url, submission.id).status is TaskStatus.NOT_FOUND


def test_invalid_request_is_rejected_with_field_messages(
    client: BFLClient, emulator: EmulatorServer
) -> None:
    with pytest.raises(RequestRejected) as caught:
        client.submit("flux-2-pro", {"prompt": "x", "height": 1000, "steps": 20})
    error = caught.value
    assert error.status_code == 422
    assert error.code == "bfl_rejected"
    assert not error.safe_to_retry
    fields = {e.field: e.message for e in error.field_errors}
    assert fields["height"] == "height must be a multiple of 16; try 1008"
    assert fields["steps"] == "steps is only accepted by flux-2-flex"
    assert "multiple of 16" in error.message
    assert emulator.submissions() == []


def test_unknown_model_endpoint_is_rejected(client: BFLClient) -> None:
    with pytest.raises(RequestRejected) as caught:
        client.submit("flux-9-imaginary", {"prompt": "x"})
    assert caught.value.status_code == 404


class _KeylessTransport(httpx.HTTPTransport):
    """Real HTTP, minus the x-key header: how a request without a key reaches BFL."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        del request.headers["x-key"]
        return super().handle_request(request)


def test_missing_key_is_401(emulator: EmulatorServer) -> None:
    with (
        BFLClient(
            emulator.base_url, API_KEY, allow_insecure_urls=True, transport=_KeylessTransport()
        ) as keyless,
        pytest.raises(AuthFailed) as caught,
    ):
        keyless.credits()
    assert caught.value.status_code == 401
    assert caught.value.code == "bfl_auth"


def test_wrong_key_is_403(client: BFLClient, emulator: EmulatorServer) -> None:
    emulator.configure(api_key="the-one-true-key-0123456789")
    with pytest.raises(AuthFailed) as caught:
        _submit(client)
    assert caught.value.status_code == 403
    assert not caught.value.safe_to_retry
    assert emulator.submissions() == []


def test_insufficient_credits_is_402_and_accepted_posts_are_charged(
    client: BFLClient, emulator: EmulatorServer
) -> None:
    emulator.configure(credits=Decimal("10"))
    assert client.credits() == Decimal("10")
    _submit(client)
    assert client.credits() == Decimal("7")
    with pytest.raises(InsufficientCredits) as caught:
        _submit(client, width=2048, height=2048)  # 7.5 credits
    assert caught.value.code == "bfl_no_credits"
    assert caught.value.status_code == 402
    assert len(emulator.submissions()) == 1


def test_active_task_cap_is_429_with_retry_after(
    client: BFLClient, emulator: EmulatorServer
) -> None:
    emulator.configure(account_active_task_cap=2, latency_mean_s=30)
    _submit(client)
    _submit(client)
    with pytest.raises(RateLimited) as caught:
        _submit(client)
    error = caught.value
    assert error.code == "bfl_rate_limited"
    assert error.safe_to_retry
    assert error.retry_after is not None and 1 <= error.retry_after <= 30
    assert len(emulator.submissions()) == 2


def test_kontext_max_has_its_own_cap_of_six(client: BFLClient, emulator: EmulatorServer) -> None:
    emulator.configure(latency_mean_s=30)
    payload = validate_request("flux-kontext-max", {"prompt": "edit"})
    for _ in range(6):
        client.submit("flux-kontext-max", payload)
    with pytest.raises(RateLimited):
        client.submit("flux-kontext-max", payload)
    _submit(client)  # other models still have room under the account cap


def test_server_error_on_submit_is_not_safe_to_resend(
    client: BFLClient, emulator: EmulatorServer
) -> None:
    emulator.configure(error_rate_5xx=1.0)
    with pytest.raises(ServerFailed) as caught:
        _submit(client)
    assert caught.value.code == "bfl_server_error"
    assert caught.value.status_code == 500
    assert not caught.value.safe_to_retry


def test_server_error_on_poll_is_safe_to_retry(client: BFLClient, emulator: EmulatorServer) -> None:
    submission = _submit(client)
    emulator.configure(poll_error_rate_5xx=1.0)
    with pytest.raises(ServerFailed) as caught:
        client.poll(submission.polling_url, submission.id)
    assert caught.value.safe_to_retry


def test_unreachable_server_is_not_sent(closed_port: int) -> None:
    with (
        BFLClient(
            f"http://127.0.0.1:{closed_port}", API_KEY, allow_insecure_urls=True, timeout=2.0
        ) as dead,
        pytest.raises(NotSent) as caught,
    ):
        dead.submit("flux-2-pro", {"prompt": "x"})
    assert caught.value.code == "bfl_not_sent"
    assert caught.value.safe_to_retry


def test_dropped_connection_after_sending_is_outcome_unknown(
    client: BFLClient, emulator: EmulatorServer
) -> None:
    with pytest.raises(OutcomeUnknown) as caught:
        _submit(client, "a cat [[drop]]")
    assert caught.value.code == "submission_unknown"
    assert not caught.value.safe_to_retry
    log = emulator.submissions()
    assert len(log) == 1 and log[0]["dropped"]


def test_hanging_answer_is_outcome_unknown(emulator: EmulatorServer) -> None:
    emulator.configure(drop_mode="hang", drop_hang_s=3)
    timeout = httpx.Timeout(5.0, read=0.3)
    with (
        BFLClient(emulator.base_url, API_KEY, allow_insecure_urls=True, timeout=timeout) as bfl,
        pytest.raises(OutcomeUnknown),
    ):
        bfl.submit("flux-2-pro", {"prompt": "a cat [[drop]]"})
    assert len(emulator.submissions()) == 1


def test_expired_result_link(client: BFLClient, emulator: EmulatorServer, wait_done: Wait) -> None:
    result = wait_done(_submit(client))
    assert result.sample_url is not None
    emulator.service.advance_clock(emulator.config.result_ttl_s + 1)
    with pytest.raises(ResultUnavailable) as caught:
        client.fetch_image(result.sample_url)
    assert caught.value.code == "result_expired"
    assert caught.value.status_code == 403
    with pytest.raises(ResultUnavailable):
        client.fetch_image(f"{emulator.base_url}/delivery/unknown-token.jpg")


def test_too_large_image_is_refused(emulator: EmulatorServer, wait_done: Wait) -> None:
    with BFLClient(
        emulator.base_url, API_KEY, allow_insecure_urls=True, max_image_bytes=1000
    ) as small:
        result = wait_done(small.submit("flux-2-pro", {"prompt": "a big picture"}))
        assert result.sample_url is not None
        with pytest.raises(ImageTooLarge) as caught:
            small.fetch_image(result.sample_url)
    assert caught.value.code == "image_too_large"


def test_wrong_content_type_is_refused(
    client: BFLClient, emulator: EmulatorServer, wait_done: Wait
) -> None:
    result = wait_done(_submit(client))
    assert result.sample_url is not None
    emulator.configure(delivery_content_type="text/html")
    with pytest.raises(ImageWrongType) as caught:
        client.fetch_image(result.sample_url)
    assert caught.value.code == "image_bad_type"


def test_flux1_models_report_no_cost(client: BFLClient, wait_done: Wait) -> None:
    payload = validate_request(
        "flux-pro-1.1-ultra", {"prompt": "wide shot", "aspect_ratio": "21:9"}
    )
    submission = client.submit("flux-pro-1.1-ultra", payload)
    assert submission.cost is None
    result = wait_done(submission)
    assert result.sample_url is not None
    with Image.open(io.BytesIO(client.fetch_image(result.sample_url).content)) as picture:
        width, height = picture.size
    assert width > height > 0


def test_plain_http_is_refused_unless_allowed() -> None:
    with pytest.raises(InsecureURL):
        BFLClient("http://api.example.test", API_KEY)
    with BFLClient("https://api.example.test", API_KEY) as secure, pytest.raises(InsecureURL):
        secure.fetch_image("http://delivery.example.test/a.jpg")
