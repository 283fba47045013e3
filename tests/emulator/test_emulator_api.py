"""The emulator speaks BFL's contract over HTTP, and its admin endpoints and limits work."""

from __future__ import annotations

import threading
import time
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from app.bfl.catalogue import validate_request
from app.emulator import EmulatorConfig, EmulatorServer
from app.errors import RequestInvalid


def _submit(http: httpx.Client, model: str = "flux-2-pro", **body: Any) -> httpx.Response:
    return http.post(f"/v1/{model}", json={"prompt": "a red kite", **body})


def _poll(http: httpx.Client, task_id: str) -> dict[str, Any]:
    response = http.get("/v1/get_result", params={"id": task_id})
    assert response.status_code == 200
    data: dict[str, Any] = response.json()
    return data


def test_submit_answers_with_a_polling_url_on_another_host(
    http: httpx.Client, emulator: EmulatorServer
) -> None:
    response = _submit(http, width=1440, height=1440, input_image="aGVsbG8=")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"id", "polling_url", "cost", "input_mp", "output_mp"}
    assert body["cost"] == 6.0  # 0.03 + 0.015 (second megapixel) + 0.015 (reference) = $0.06
    assert body["input_mp"] == 1.0 and body["output_mp"] == pytest.approx(1.98, abs=0.01)
    polling = urlsplit(body["polling_url"])
    assert polling.hostname == "localhost" and polling.path == "/regional/v1/get_result"
    regional = httpx.get(body["polling_url"], headers=http.headers, timeout=5)
    assert regional.status_code == 200 and regional.json()["id"] == body["id"]


def test_polling_base_url_can_be_configured(http: httpx.Client, emulator: EmulatorServer) -> None:
    emulator.configure(polling_base_url="https://api.eu.example.test/")
    body = _submit(http).json()
    assert body["polling_url"] == f"https://api.eu.example.test/v1/get_result?id={body['id']}"


def test_flux1_answers_carry_no_cost(http: httpx.Client) -> None:
    body = _submit(http, "flux-kontext-pro").json()
    assert set(body) == {"id", "polling_url"}


def test_pending_then_ready_with_result_fields(
    http: httpx.Client, emulator: EmulatorServer
) -> None:
    emulator.configure(latency_mean_s=10)
    task_id = _submit(http, seed=99).json()["id"]
    pending = _poll(http, task_id)
    assert pending["status"] == "Pending" and pending["result"] is None
    assert 0 <= pending["progress"] < 0.5
    emulator.service.advance_clock(6)
    later = _poll(http, task_id)
    assert later["status"] == "Pending" and later["progress"] > pending["progress"]
    emulator.service.advance_clock(5)
    ready = _poll(http, task_id)
    assert ready["status"] == "Ready"
    result = ready["result"]
    assert result["seed"] == 99 and result["prompt"] == "a red kite"
    assert result["end_time"] - result["start_time"] == pytest.approx(10, abs=0.01)
    assert result["duration"] == pytest.approx(10, abs=0.01)
    assert urlsplit(result["sample"]).path.startswith("/delivery/")
    assert result["sample"].endswith(".jpg")


def test_slow_trigger_multiplies_latency(http: httpx.Client, emulator: EmulatorServer) -> None:
    emulator.configure(latency_mean_s=1)
    task_id = _submit(http, prompt="a snail [[slow]]").json()["id"]
    emulator.service.advance_clock(5)
    assert _poll(http, task_id)["status"] == "Pending"
    emulator.service.advance_clock(6)
    assert _poll(http, task_id)["status"] == "Ready"


def test_validation_is_exactly_the_catalogue_s(http: httpx.Client) -> None:
    params = {"prompt": "x", "height": 1000, "steps": 4}
    with pytest.raises(RequestInvalid) as expected:
        validate_request("flux-2-pro", params)
    response = http.post("/v1/flux-2-pro", json=params)
    assert response.status_code == 422
    assert response.json() == {
        "detail": [
            {"loc": ["body", e.field], "msg": e.message, "type": "value_error"}
            for e in expected.value.errors
        ]
    }


def test_malformed_bodies_and_unknown_models(http: httpx.Client) -> None:
    bad_json = http.post(
        "/v1/flux-2-pro", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert bad_json.status_code == 422 and bad_json.json()["detail"][0]["loc"] == ["body"]
    assert http.post("/v1/flux-2-pro", json=["x"]).status_code == 422
    assert _submit(http, "flux-7").status_code == 404


def test_keys(emulator: EmulatorServer) -> None:
    base = emulator.base_url
    assert httpx.get(f"{base}/v1/credits").status_code == 401
    assert httpx.get(f"{base}/v1/credits", headers={"x-key": "anything"}).status_code == 200
    emulator.configure(api_key="the-right-key")
    assert httpx.get(f"{base}/v1/credits", headers={"x-key": "anything"}).status_code == 403
    assert httpx.get(f"{base}/v1/credits", headers={"x-key": "the-right-key"}).status_code == 200
    assert httpx.get(f"{base}/v1/get_result", params={"id": "x"}).status_code == 401
    assert httpx.get(f"{base}/_emulator/config").json()["api_key"] == "***"


def test_credits_are_charged_and_enforced(http: httpx.Client, emulator: EmulatorServer) -> None:
    emulator.configure(credits=5)
    assert http.get("/v1/credits").json() == {"credits": 5.0}
    assert _submit(http).status_code == 200
    assert http.get("/v1/credits").json() == {"credits": 2.0}
    refused = _submit(http)
    assert refused.status_code == 402
    assert "Insufficient credits" in refused.json()["detail"]
    assert len(emulator.submissions()) == 1


def test_an_outage_answers_503_everywhere_and_is_logged_as_refused(
    http: httpx.Client, emulator: EmulatorServer
) -> None:
    accepted = _submit(http).json()
    emulator.configure(unavailable=True)
    for response in (
        _submit(http),
        http.get("/v1/get_result", params={"id": accepted["id"]}),
        http.get("/v1/credits"),
    ):
        assert response.status_code == 503
        assert response.json() == {"detail": "Service Unavailable"}
    assert len(emulator.submissions()) == 1  # nothing was created
    assert http.get("/_emulator/refusals").json() == {
        "count": 1,
        "refusals": [
            {"model": "flux-2-pro", "status": 503, "time": emulator.service.refusals()[0]["time"]}
        ],
    }
    emulator.configure(unavailable=False)
    assert _submit(http).status_code == 200


def test_a_429_in_every_form_bfl_may_send_it(http: httpx.Client, emulator: EmulatorServer) -> None:
    from datetime import UTC, datetime
    from email.utils import parsedate_to_datetime

    emulator.configure(account_active_task_cap=1, latency_mean_s=20, rate_limit_headers=True)
    ok = _submit(http)
    assert ok.status_code == 200
    assert ok.headers["x-ratelimit-limit"] == "1"
    assert ok.headers["x-ratelimit-remaining"] == "0"
    assert 19 <= int(ok.headers["x-ratelimit-reset"]) <= 21

    emulator.configure(retry_after_s=7200, retry_after_format="http-date", rate_limit_body="error")
    refused = _submit(http)
    assert refused.status_code == 429
    when = parsedate_to_datetime(refused.headers["retry-after"])
    assert 7190 <= (when - datetime.now(UTC)).total_seconds() <= 7201
    body = refused.json()
    assert body["error"] == "rate_limit_exceeded" and body["retry_after"] == 7200
    assert "Too many active tasks" in body["message"]
    assert refused.headers["x-ratelimit-remaining"] == "0"

    emulator.configure(retry_after_format="none", rate_limit_body="detail")
    bare = _submit(http)
    assert bare.status_code == 429 and "retry-after" not in bare.headers
    assert "Too many active tasks" in bare.json()["detail"]
    assert [r["status"] for r in emulator.service.refusals()] == [429, 429]


def test_active_task_cap_and_retry_after(http: httpx.Client, emulator: EmulatorServer) -> None:
    emulator.configure(account_active_task_cap=3, latency_mean_s=20)
    for _ in range(3):
        assert _submit(http).status_code == 200
    refused = _submit(http)
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["retry-after"]) <= 20
    emulator.service.advance_clock(21)  # they finish, so they stop counting
    assert _submit(http).status_code == 200
    assert len(emulator.submissions()) == 4


def test_state_reports_the_peak_of_active_tasks_and_refusals_at_the_cap(
    http: httpx.Client, emulator: EmulatorServer
) -> None:
    emulator.configure(account_active_task_cap=2, latency_mean_s=20)
    assert [_submit(http).status_code for _ in range(3)] == [200, 200, 429]
    emulator.service.advance_clock(21)  # both finish: active drops, the peak stays
    assert _submit(http).status_code == 200
    state = http.get("/_emulator/state").json()
    assert (state["active_tasks"], state["peak_active_tasks"]) == (1, 2)
    assert state["account_cap_refusals"] == 1
    emulator.configure(model_task_caps={"flux-2-pro": 1})
    assert _submit(http).status_code == 429  # the model's cap, not the account's
    assert http.get("/_emulator/state").json()["account_cap_refusals"] == 1


def test_model_caps_come_from_the_catalogue(http: httpx.Client, emulator: EmulatorServer) -> None:
    emulator.configure(latency_mean_s=20)
    codes = [_submit(http, "flux-kontext-max").status_code for _ in range(7)]
    assert codes == [200] * 6 + [429]
    emulator.configure(model_task_caps={"flux-2-pro": 1})
    assert [_submit(http).status_code for _ in range(2)] == [200, 429]


def test_cap_holds_under_concurrent_submissions(emulator: EmulatorServer) -> None:
    emulator.configure(account_active_task_cap=10, latency_mean_s=30)
    codes: list[int] = []
    lock = threading.Lock()

    def submit() -> None:
        with httpx.Client(base_url=emulator.base_url, headers={"x-key": "k"}, timeout=10) as c:
            code = c.post("/v1/flux-2-pro", json={"prompt": "race"}).status_code
        with lock:
            codes.append(code)

    threads = [threading.Thread(target=submit) for _ in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(codes) == [200] * 10 + [429] * 30
    ids = [s["id"] for s in emulator.submissions()]
    assert len(ids) == len(set(ids)) == 10


def test_server_errors_on_demand(http: httpx.Client, emulator: EmulatorServer) -> None:
    task_id = _submit(http).json()["id"]
    emulator.configure(error_rate_5xx=1.0, poll_error_rate_5xx=1.0)
    assert _submit(http).status_code == 500
    assert http.get("/v1/get_result", params={"id": task_id}).status_code == 503
    assert len(emulator.submissions()) == 1  # a 500 creates no task


@pytest.mark.parametrize(
    ("trigger", "status", "details_key"),
    [
        ("[[request-moderated]]", "Request Moderated", "Moderation Reasons"),
        ("[[content-moderated]]", "Content Moderated", "Moderation Reasons"),
        ("[[error]]", "Error", "error"),
    ],
)
def test_failure_triggers(
    http: httpx.Client, emulator: EmulatorServer, trigger: str, status: str, details_key: str
) -> None:
    task_id = _submit(http, prompt=f"x {trigger}").json()["id"]
    emulator.service.advance_clock(1)
    body = _poll(http, task_id)
    assert body["status"] == status and body["result"] is None
    assert details_key in body["details"]


def test_not_found_trigger_and_task_expiry(http: httpx.Client, emulator: EmulatorServer) -> None:
    hidden = _submit(http, prompt="x [[not-found]]").json()["id"]
    kept = _submit(http).json()["id"]
    assert _poll(http, hidden) == {"id": hidden, "status": "Task not found"}
    emulator.service.advance_clock(1)
    assert _poll(http, kept)["status"] == "Ready"
    emulator.service.advance_clock(emulator.config.task_ttl_s + 1)
    assert _poll(http, kept)["status"] == "Task not found"


def test_result_links_expire(http: httpx.Client, emulator: EmulatorServer) -> None:
    emulator.configure(latency_mean_s=5)
    task_id = _submit(http).json()["id"]
    emulator.service.advance_clock(6)
    sample = _poll(http, task_id)["result"]["sample"]
    assert httpx.get(sample).status_code == 200
    emulator.service.advance_clock(emulator.config.result_ttl_s + 1)
    assert httpx.get(sample).status_code == 403
    assert httpx.get(f"{emulator.base_url}/delivery/nope.jpg").status_code == 404


def test_drop_trigger_accepts_but_never_answers(
    http: httpx.Client, emulator: EmulatorServer
) -> None:
    with pytest.raises(httpx.TransportError):
        _submit(http, prompt="x [[drop]]")
    (entry,) = emulator.submissions()
    assert entry["dropped"] and entry["payload"]["prompt"] == "x [[drop]]"
    assert httpx.get(f"{emulator.base_url}/").status_code == 200  # the server is fine


def test_submission_log_leaves_out_images_and_secrets(
    http: httpx.Client, emulator: EmulatorServer
) -> None:
    _submit(
        http,
        input_image="aGVsbG8=" * 50,
        webhook_url="http://127.0.0.1:9/hook",
        webhook_secret="hush-hush",
    )
    log = http.get("/_emulator/submissions").json()
    assert log["count"] == 1
    entry = log["submissions"][0]
    assert entry["model"] == "flux-2-pro" and entry["id"] and entry["time"]
    assert entry["payload"]["input_image"] == "<image>"
    assert "webhook_secret" not in entry["payload"]
    assert "hush-hush" not in str(log)


def test_admin_config_patch_and_reset(http: httpx.Client, emulator: EmulatorServer) -> None:
    changed = http.patch("/_emulator/config", json={"latency_mean_s": 0.2, "credits": "77"})
    assert changed.status_code == 200 and changed.json()["latency_mean_s"] == 0.2
    assert http.get("/v1/credits").json() == {"credits": 77.0}
    assert http.patch("/_emulator/config", json={"latency_mean_s": -1}).status_code == 422
    assert http.patch("/_emulator/config", json={"no_such_setting": 1}).status_code == 422
    assert http.get("/_emulator/config").json()["latency_mean_s"] == 0.2
    _submit(http)
    assert http.post("/_emulator/reset").status_code == 200
    assert http.get("/_emulator/submissions").json()["count"] == 0
    assert http.get("/_emulator/config").json()["latency_mean_s"] == 0.05
    assert http.post("/_emulator/clock", json={"advance_s": 3}).json() == {"offset_s": 3.0}


def test_config_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMULATOR_LATENCY_MEAN_S", "0.7")
    monkeypatch.setenv("EMULATOR_API_KEY", "from-env")
    config = EmulatorConfig()
    assert config.latency_mean_s == 0.7 and config.api_key == "from-env"


def test_reference_images_are_priced_by_their_megapixels(http: httpx.Client) -> None:
    import base64
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (1500, 1000), (10, 20, 30)).save(buffer, "PNG")  # 1.43 MP: billed as 2
    picture = base64.b64encode(buffer.getvalue()).decode()
    body = _submit(
        http,
        input_image=picture,
        input_image_2="https://example.com/a.png",
        width=1024,
        height=1024,
    ).json()
    # A URL's size is unknown until BFL fetches it: one megapixel.
    assert body["input_mp"] == 3.0
    assert body["cost"] == 7.5  # 3 for a 1 MP output + 1.5 x 3 input megapixels, in credits
    # Without a size the output follows the first reference (1488 x 992, billed as 2 MP).
    body = _submit(http, input_image=picture, input_image_2="https://example.com/a.png").json()
    assert body["cost"] == 9.0  # 3 + 1.5 for the 2 MP output + 1.5 x 3 input megapixels


def test_moderated_tasks_name_their_reasons_as_bfl_does(
    http: httpx.Client, emulator: EmulatorServer
) -> None:
    task_id = _submit(http, prompt="x [[request-moderated]]").json()["id"]
    emulator.service.advance_clock(1)
    assert _poll(http, task_id)["details"] == {"Moderation Reasons": ["Derivative Works Filter"]}
    emulator.configure(moderation_reasons=["Public Figures Filter"])
    assert _poll(http, task_id)["details"] == {"Moderation Reasons": ["Public Figures Filter"]}


def test_answer_delay_holds_back_the_answer_of_a_task_that_already_exists(
    http: httpx.Client, emulator: EmulatorServer
) -> None:
    emulator.configure(answer_delay_s=1.0)
    seen: list[int] = []
    sender = threading.Thread(target=lambda: seen.append(len(_submit(http).json()["id"])))
    started = time.monotonic()
    sender.start()
    deadline = time.monotonic() + 5
    while not emulator.submissions() and time.monotonic() < deadline:
        time.sleep(0.02)
    # BFL has the task (and charged it) while the answer is still on its way.
    assert len(emulator.submissions()) == 1 and not seen
    sender.join(10)
    assert seen and time.monotonic() - started >= 1.0
