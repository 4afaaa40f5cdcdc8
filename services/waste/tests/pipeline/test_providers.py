"""The openai and roboflow providers against recorded answers, and the registry's fallback."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
import respx
from PIL import Image

from ecosort_waste.classifier import roboflow_provider
from ecosort_waste.classifier.base import Classification
from ecosort_waste.classifier.categories import CATEGORY_CODES
from ecosort_waste.classifier.openai_provider import create_openai_classifier
from ecosort_waste.classifier.registry import ClassifierRegistry, registry_from_settings
from ecosort_waste.classifier.remote import CallBudget, ProviderError, ranked_classification
from ecosort_waste.classifier.roboflow_provider import RoboflowClassifier
from ecosort_waste.config import Settings

from .conftest import FakeThirdParties, RawReply, photo_bytes, recording

ROBOFLOW = "https://detect.roboflow.test"
ROBOFLOW_MODEL_URL = f"{ROBOFLOW}/taco-trash/3"


@pytest.fixture
def photo() -> Image.Image:
    return Image.open(io.BytesIO(photo_bytes()))


def openai_answer(content: str) -> dict[str, Any]:
    """The recorded completion with another structured answer as its content."""
    answer = recording("openai_chat_completion_can.json")
    answer["choices"][0]["message"]["content"] = content
    return answer


def openai_for(fake: FakeThirdParties, **overrides: Any) -> Any:
    options: dict[str, Any] = {
        "api_key": "sk-test",
        "model": "gpt-4o-mini",
        "base_url": f"{fake.url}/v1",
        "timeout_seconds": 5,
        "max_retries": 2,
    }
    options.update(overrides)
    return create_openai_classifier(**options)


# --- openai ---------------------------------------------------------------------------------


def test_openai_asks_for_json_constrained_to_our_codes(
    third_parties: FakeThirdParties, photo: Image.Image
) -> None:
    result = openai_for(third_parties).classify(photo)

    assert result.category == "can" and not result.not_sure
    assert result.confidence == pytest.approx(0.86)
    assert [c.category for c in result.candidates] == ["can", "scrap_metal", "general"]
    assert result.model_version == "openai:gpt-4o-mini-2024-07-18"
    assert "aluminium drink can" in result.mapping_note
    (request,) = third_parties.chat_requests()
    response_format = request["response_format"]
    assert response_format["type"] == "json_schema"
    assert response_format["json_schema"]["strict"] is True
    schema = response_format["json_schema"]["schema"]
    assert schema["properties"]["category"]["enum"] == list(CATEGORY_CODES)
    assert schema["additionalProperties"] is False
    # Output is capped (cost, and a model emitting whitespace until its limit); "low" detail.
    assert request["max_completion_tokens"] == 400
    assert request["messages"][1]["content"][1]["image_url"]["detail"] == "low"
    image_part = request["messages"][1]["content"][1]["image_url"]["url"]
    assert image_part.startswith("data:image/jpeg;base64,")
    Image.open(io.BytesIO(base64.b64decode(image_part.split(",", 1)[1]))).verify()


def test_openai_retries_rate_limits_with_the_sdk_backoff(
    third_parties: FakeThirdParties, photo: Image.Image
) -> None:
    third_parties.openai_responses = [
        (429, recording("openai_error_rate_limit.json")),
        (200, recording("openai_chat_completion_can.json")),
    ]
    assert openai_for(third_parties).classify(photo).category == "can"
    assert len(third_parties.chat_requests()) == 2


@pytest.mark.parametrize(
    "header", [{"Retry-After": "60"}, {"retry-after-ms": "60000"}], ids=["seconds", "ms"]
)
def test_openai_does_not_wait_out_a_long_retry_after(
    third_parties: FakeThirdParties, photo: Image.Image, header: dict[str, str]
) -> None:
    # The SDK alone would sleep 60 s and ask again, long after the registry's deadline gave the
    # photo to the local model: a parked thread and a paid answer nobody reads.
    body = json.dumps(recording("openai_error_rate_limit.json")).encode()
    third_parties.openai_responses = [
        (429, RawReply({"Content-Type": "application/json", **header}, body)),
        (200, recording("openai_chat_completion_can.json")),
    ]
    started = time.monotonic()
    with pytest.raises(ProviderError, match="RateLimitError"):
        openai_for(third_parties, max_retry_after_seconds=1).classify(photo)
    assert time.monotonic() - started < 5
    assert len(third_parties.chat_requests()) == 1


def test_openai_gives_up_with_provider_error(
    third_parties: FakeThirdParties, photo: Image.Image
) -> None:
    third_parties.openai_responses = [(500, {"error": {"message": "boom", "type": "server"}})]
    with pytest.raises(ProviderError, match="InternalServerError"):
        openai_for(third_parties, max_retries=1).classify(photo)
    assert len(third_parties.chat_requests()) == 2  # the first try and one retry


def test_openai_times_out(third_parties: FakeThirdParties, photo: Image.Image) -> None:
    third_parties.hang_openai.set()
    with pytest.raises(ProviderError, match="Timeout"):
        openai_for(third_parties, timeout_seconds=0.3, max_retries=0).classify(photo)


@pytest.mark.parametrize(
    "answer",
    [
        recording("openai_chat_completion_refusal.json"),
        # A code outside the schema must not slip through even if the model invents one.
        {
            **recording("openai_chat_completion_can.json"),
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {
                        "role": "assistant",
                        "content": '{"category":"toaster","confidence":0.9,"candidates":[],'
                        '"item":"toaster","note":""}',
                    },
                }
            ],
        },
        # Cut short by the token limit: not valid JSON.
        {
            **recording("openai_chat_completion_can.json"),
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "length",
                    "message": {"role": "assistant", "content": '{"category":"ca'},
                }
            ],
        },
        # Shapes the SDK passes through unparsed (a str, a list, a message of None).
        "captive portal",
        [],
        {
            **recording("openai_chat_completion_can.json"),
            "choices": [{"index": 0, "finish_reason": "stop", "message": None}],
        },
        {**recording("openai_chat_completion_can.json"), "choices": 5},
        # Nested past any parser's recursion limit.
        openai_answer("[" * 100_000),
    ],
)
def test_openai_unusable_answers_are_provider_errors(
    third_parties: FakeThirdParties, photo: Image.Image, answer: Any
) -> None:
    third_parties.openai_responses = [(200, answer)]
    with pytest.raises(ProviderError):
        openai_for(third_parties).classify(photo)


@pytest.mark.parametrize(
    ("content_type", "body"),
    [("text/html", b"<html>captive portal</html>"), ("application/json", b"[" * 100_000)],
)
def test_openai_unparseable_bodies_are_provider_errors(
    third_parties: FakeThirdParties, photo: Image.Image, content_type: str, body: bytes
) -> None:
    third_parties.openai_responses = [(200, RawReply({"Content-Type": content_type}, body))]
    with pytest.raises(ProviderError, match="not a chat completion"):
        openai_for(third_parties).classify(photo)


def test_openai_does_not_follow_redirects(
    third_parties: FakeThirdParties, photo: Image.Image
) -> None:
    # Following a 307 would re-POST the photo and the key to whatever host the Location names.
    elsewhere = f"{third_parties.url}/v1/chat/completions?followed"
    third_parties.openai_responses = [(307, RawReply({"Location": elsewhere}))]
    with pytest.raises(ProviderError, match="307"):
        openai_for(third_parties, max_retries=0).classify(photo)
    assert [r.path for r in third_parties.requests] == ["/v1/chat/completions"]


def test_openai_without_a_model_in_the_answer_records_the_configured_one(
    third_parties: FakeThirdParties, photo: Image.Image
) -> None:
    answer = recording("openai_chat_completion_can.json")
    del answer["model"]
    third_parties.openai_responses = [(200, answer)]
    assert openai_for(third_parties).classify(photo).model_version == "openai:gpt-4o-mini"


def test_openai_low_confidence_is_not_sure(
    third_parties: FakeThirdParties, photo: Image.Image
) -> None:
    answer = recording("openai_chat_completion_can.json")
    answer["choices"][0]["message"]["content"] = (
        '{"category":"plastic","confidence":0.35,"candidates":[{"category":"vinyl",'
        '"confidence":0.33}],"item":"crumpled wrapper","note":""}'
    )
    third_parties.openai_responses = [(200, answer)]
    result = openai_for(third_parties).classify(photo)
    assert result.not_sure and result.category is None
    assert [c.category for c in result.candidates] == ["plastic", "vinyl"]


@pytest.mark.parametrize(
    ("content", "category", "candidates"),
    [
        # A candidate more confident than the model's own category wins, and so is not unsure.
        (
            '{"category":"can","confidence":0.4,"candidates":[{"category":"general",'
            '"confidence":0.7},{"category":"can","confidence":0.4}],"item":"x","note":""}',
            "general",
            [("general", 0.7), ("can", 0.4)],
        ),
        # Not sure: the candidates are still best first, ties by code, each code once.
        (
            '{"category":"can","confidence":0.3,"candidates":[{"category":"paper",'
            '"confidence":0.45},{"category":"general","confidence":0.45},{"category":"can",'
            '"confidence":0.2}],"item":"x","note":""}',
            None,
            [("general", 0.45), ("paper", 0.45), ("can", 0.3)],
        ),
    ],
)
def test_openai_candidates_are_ranked_by_confidence(
    third_parties: FakeThirdParties,
    photo: Image.Image,
    content: str,
    category: str | None,
    candidates: list[tuple[str, float]],
) -> None:
    third_parties.openai_responses = [(200, openai_answer(content))]
    result = openai_for(third_parties).classify(photo)
    assert (result.category, result.not_sure) == (category, category is None)
    assert result.confidence == candidates[0][1]
    assert [(c.category, c.confidence) for c in result.candidates] == candidates


# --- roboflow -------------------------------------------------------------------------------


def roboflow(**overrides: Any) -> RoboflowClassifier:
    options: dict[str, Any] = {
        "base_url": ROBOFLOW,
        "model_id": "taco-trash/3",
        "api_key": "rf-test",
        "backoff_seconds": 0.01,
    }
    options.update(overrides)
    return RoboflowClassifier(httpx.Client(timeout=1), **options)


@respx.mock
def test_roboflow_maps_detections_to_categories(photo: Image.Image) -> None:
    route = respx.post(ROBOFLOW_MODEL_URL).respond(
        200, json=recording("roboflow_detection_can.json")
    )

    result = roboflow().classify(photo)

    assert result.category == "can" and result.confidence == pytest.approx(0.912)
    # Best per category; the unmapped "cigarette" class is ignored.
    assert [(c.category, c.confidence) for c in result.candidates] == [
        ("can", 0.912),
        ("plastic", 0.431),
    ]
    assert result.model_version == "roboflow:taco-trash/3"
    request = route.calls.last.request
    assert request.url.params["api_key"] == "rf-test"
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    Image.open(io.BytesIO(base64.b64decode(request.content))).verify()


@respx.mock
def test_roboflow_classification_answers_work_too(photo: Image.Image) -> None:
    respx.post(ROBOFLOW_MODEL_URL).respond(
        200, json=recording("roboflow_classification_glass.json")
    )
    assert roboflow().classify(photo).category == "glass_bottle"


@respx.mock
def test_roboflow_multi_label_answers_work_too(photo: Image.Image) -> None:
    # `predictions` is a mapping there; the unmapped "cigarette", though the most confident,
    # is ignored.
    respx.post(ROBOFLOW_MODEL_URL).respond(
        200, json=recording("roboflow_multilabel_classification.json")
    )
    result = roboflow().classify(photo)
    assert (result.category, result.confidence) == ("paper", pytest.approx(0.8123))
    assert [c.category for c in result.candidates] == ["paper", "plastic", "general"]


@respx.mock
def test_roboflow_retries_server_errors(photo: Image.Image) -> None:
    route = respx.post(ROBOFLOW_MODEL_URL)
    route.side_effect = [
        httpx.Response(503),
        httpx.ConnectError("refused"),
        httpx.Response(200, json=recording("roboflow_detection_can.json")),
    ]
    assert roboflow().classify(photo).category == "can"
    assert route.call_count == 3


def answer_with_confidence(confidence: str) -> httpx.Response:
    return httpx.Response(
        200, content=f'{{"predictions":[{{"class":"can","confidence":{confidence}}}]}}'.encode()
    )


@respx.mock
@pytest.mark.parametrize(
    ("response", "calls"),
    [
        (httpx.Response(401, json={"message": "Unauthorized api_key"}), 1),
        (httpx.Response(500), 3),
        (httpx.Response(200, json=recording("roboflow_detection_empty.json")), 1),
        (httpx.Response(200, text="not json"), 1),
        (httpx.Response(200, content=b"[" * 100_000), 1),
        (httpx.Response(200, json={"predictions": None}), 1),
        (httpx.Response(200, json={"predictions": [{"class": {"a": 1}, "confidence": 0.9}]}), 1),
        # Confidences must be real numbers in [0, 1]; Infinity would also break the saved JSON.
        *(
            (answer_with_confidence(c), 1)
            for c in ("7.5", "-0.3", "true", '"0.9"', "Infinity", "NaN")
        ),
        (httpx.Response(200, json={"predictions": {"can": {"confidence": 1.5}}}), 1),
    ],
)
def test_roboflow_failures_are_provider_errors(
    photo: Image.Image, response: httpx.Response, calls: int
) -> None:
    route = respx.post(ROBOFLOW_MODEL_URL).mock(return_value=response)
    with pytest.raises(ProviderError):
        roboflow().classify(photo)
    assert route.call_count == calls


def trickle(chunks: int, size: int, pause: float = 0.0) -> Iterator[bytes]:
    """A valid answer padded with whitespace, sent in `chunks` pieces `pause` seconds apart."""
    answer = b'{"predictions":[{"class":"can","confidence":0.9}]}'
    for _ in range(chunks - 1):
        yield b" " * size
        time.sleep(pause)
    yield answer


@respx.mock
def test_roboflow_stops_reading_past_the_body_cap(photo: Image.Image) -> None:
    sent = trickle(chunks=100, size=1000)
    respx.post(ROBOFLOW_MODEL_URL).respond(200, content=sent)
    with pytest.raises(ProviderError, match="larger than 5000 bytes"):
        roboflow(max_body_bytes=5000).classify(photo)
    assert len(list(sent)) > 90  # the rest was never read


@respx.mock
def test_roboflow_stops_a_trickling_answer_at_the_deadline(photo: Image.Image) -> None:
    # Each read is quick, so only a deadline for the whole answer catches this.
    respx.post(ROBOFLOW_MODEL_URL).respond(200, content=trickle(chunks=40, size=1, pause=0.05))
    started = time.monotonic()
    with pytest.raises(ProviderError, match=r"took over 0\.2 s"):
        roboflow(deadline_seconds=0.2).classify(photo)
    assert time.monotonic() - started < 1


@respx.mock
@pytest.mark.parametrize(
    ("retry_after", "low", "high"),
    [("0.3", 0.3, 0.3), (None, 0.01, 0.01), ("soon", 0.01, 0.01), ("date", 0.5, 2.0)],
)
def test_roboflow_waits_as_long_as_retry_after_asks(
    photo: Image.Image,
    monkeypatch: pytest.MonkeyPatch,
    retry_after: str | None,
    low: float,
    high: float,
) -> None:
    if retry_after == "date":  # the HTTP-date form, about two seconds from now
        retry_after = format_datetime(datetime.now(UTC) + timedelta(seconds=2), usegmt=True)
    pauses: list[float] = []
    monkeypatch.setattr(roboflow_provider.time, "sleep", pauses.append)
    route = respx.post(ROBOFLOW_MODEL_URL)
    route.side_effect = [
        httpx.Response(429, headers={"Retry-After": retry_after} if retry_after else {}),
        httpx.Response(200, json=recording("roboflow_detection_can.json")),
    ]
    assert roboflow().classify(photo).category == "can"
    (pause,) = pauses
    assert low <= pause <= high


@respx.mock
def test_roboflow_gives_up_when_retry_after_is_too_long(
    photo: Image.Image, monkeypatch: pytest.MonkeyPatch
) -> None:
    pauses: list[float] = []
    monkeypatch.setattr(roboflow_provider.time, "sleep", pauses.append)
    route = respx.post(ROBOFLOW_MODEL_URL).respond(503, headers={"Retry-After": "60"})
    with pytest.raises(ProviderError, match="retry after 60 s"):
        roboflow(max_retry_after_seconds=1).classify(photo)
    assert (route.call_count, pauses) == (1, [])


@pytest.mark.parametrize("confidence", [float("inf"), float("nan"), 1.5, -0.1, True])
def test_ranked_classification_refuses_impossible_confidences(confidence: Any) -> None:
    with pytest.raises(ProviderError, match="confidence"):
        ranked_classification(
            [("can", confidence)], min_confidence=0.5, model_version="x:1", mapping_note=""
        )


def test_roboflow_refuses_a_class_map_with_unknown_codes() -> None:
    with pytest.raises(ValueError, match="unknown category codes"):
        roboflow(class_map={"metal": "tin"})


# --- registry and fallback ------------------------------------------------------------------


class CountingLocal:
    """Stands in for the local model in these unit tests: the fallback logic is what is tested
    here; the pipeline and worker tests use the real LocalClassifier."""

    name = "local"

    def __init__(self, answer: Classification) -> None:
        self.answer = answer
        self.calls = 0
        self.loads = 0

    def load(self) -> CountingLocal:
        self.loads += 1
        return self

    def classify(self, image: Image.Image) -> Classification:
        self.calls += 1
        return self.answer


class FailingRemote:
    name = "openai"

    def classify(self, image: Image.Image, budget: CallBudget) -> Classification:
        raise ProviderError("openai: APIConnectionError: Connection error.")


@pytest.fixture
def local_answer(third_parties: FakeThirdParties, photo: Image.Image) -> Classification:
    # A real Classification object (built by the openai provider from its recording).
    answer: Classification = openai_for(third_parties).classify(photo)
    return answer


def test_registry_falls_back_to_local_when_the_remote_fails(
    photo: Image.Image, local_answer: Classification
) -> None:
    local = CountingLocal(local_answer)
    registry = ClassifierRegistry("openai", local_loader=local.load, remote=FailingRemote())

    answer = registry.classify(photo)

    assert answer.provider == "local" and answer.classification is local_answer
    assert answer.fallback_reason is not None and "APIConnectionError" in answer.fallback_reason
    assert local.calls == 1


def test_registry_loads_the_local_model_once_even_from_threads(
    photo: Image.Image, local_answer: Classification
) -> None:
    local = CountingLocal(local_answer)
    registry = ClassifierRegistry("local", local_loader=local.load)
    threads = [threading.Thread(target=registry.classify, args=(photo,)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert (local.loads, local.calls) == (1, 8)
    assert registry.classify(photo).provider == "local"


def test_registry_from_settings_chooses_the_configured_provider(
    third_parties: FakeThirdParties, photo: Image.Image, local_answer: Classification
) -> None:
    local = CountingLocal(local_answer)
    settings = Settings(
        classifier_provider="openai",
        openai_api_key="sk-test",
        openai_base_url=f"{third_parties.url}/v1",
    )
    answer = registry_from_settings(settings, local_loader=local.load).classify(photo)
    assert answer.provider == "openai" and local.calls == 0

    third_parties.openai_responses = [(503, {"error": {"message": "overloaded"}})]
    settings.openai_max_retries = 0
    fallback = registry_from_settings(settings, local_loader=local.load).classify(photo)
    assert fallback.provider == "local" and local.calls == 1


@pytest.mark.parametrize(
    ("provider", "missing"),
    [("openai", "OPENAI_API_KEY"), ("roboflow", "ROBOFLOW_API_KEY")],
)
def test_registry_refuses_a_remote_provider_without_credentials(
    provider: str, missing: str
) -> None:
    with pytest.raises(ValueError, match=missing):
        registry_from_settings(Settings(classifier_provider=provider))
