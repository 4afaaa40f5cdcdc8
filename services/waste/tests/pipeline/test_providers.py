"""The openai and roboflow providers against recorded answers, and the registry's fallback."""

from __future__ import annotations

import base64
import io
import threading
from typing import Any

import httpx
import pytest
import respx
from PIL import Image

from ecosort_waste.classifier.base import Classification
from ecosort_waste.classifier.categories import CATEGORY_CODES
from ecosort_waste.classifier.openai_provider import create_openai_classifier
from ecosort_waste.classifier.registry import ClassifierRegistry, registry_from_settings
from ecosort_waste.classifier.remote import ProviderError
from ecosort_waste.classifier.roboflow_provider import RoboflowClassifier
from ecosort_waste.config import Settings

from .conftest import FakeThirdParties, photo_bytes, recording

ROBOFLOW = "https://detect.roboflow.test"
ROBOFLOW_MODEL_URL = f"{ROBOFLOW}/taco-trash/3"


@pytest.fixture
def photo() -> Image.Image:
    return Image.open(io.BytesIO(photo_bytes()))


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
    ],
)
def test_openai_unusable_answers_are_provider_errors(
    third_parties: FakeThirdParties, photo: Image.Image, answer: dict[str, Any]
) -> None:
    third_parties.openai_responses = [(200, answer)]
    with pytest.raises(ProviderError):
        openai_for(third_parties).classify(photo)


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
def test_roboflow_retries_server_errors(photo: Image.Image) -> None:
    route = respx.post(ROBOFLOW_MODEL_URL)
    route.side_effect = [
        httpx.Response(503),
        httpx.ConnectError("refused"),
        httpx.Response(200, json=recording("roboflow_detection_can.json")),
    ]
    assert roboflow().classify(photo).category == "can"
    assert route.call_count == 3


@respx.mock
@pytest.mark.parametrize(
    ("response", "calls"),
    [
        (httpx.Response(401, json={"message": "Unauthorized api_key"}), 1),
        (httpx.Response(500), 3),
        (httpx.Response(200, json=recording("roboflow_detection_empty.json")), 1),
        (httpx.Response(200, text="not json"), 1),
    ],
)
def test_roboflow_failures_are_provider_errors(
    photo: Image.Image, response: httpx.Response, calls: int
) -> None:
    route = respx.post(ROBOFLOW_MODEL_URL).mock(return_value=response)
    with pytest.raises(ProviderError):
        roboflow().classify(photo)
    assert route.call_count == calls


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

    def classify(self, image: Image.Image) -> Classification:
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
