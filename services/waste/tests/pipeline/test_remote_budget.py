"""A remote call's budget (REMOTE_CLASSIFIER_DEADLINE_SECONDS, retries included): once it is
spent the registry has given up on the call for the local model, and the call sends the
provider nothing more, so nothing more is billed, and frees its thread as soon as its attempt in
flight ends. The providers' real clients, built from settings as in production, against the
local server, which counts the requests that reach it."""

from __future__ import annotations

import json
import time

import pytest
from PIL import Image

from ecosort_waste.classifier.base import Candidate, Classification
from ecosort_waste.classifier.openai_provider import create_openai_classifier
from ecosort_waste.classifier.registry import LOCAL, ClassifierRegistry
from ecosort_waste.classifier.remote import CallBudget, ProviderError, RemoteClassifier
from ecosort_waste.classifier.roboflow_provider import create_roboflow_classifier

from .conftest import FakeThirdParties, RawReply, recording

PHOTO = Image.new("RGB", (32, 32), "white")
PROVIDERS = ["openai", "roboflow"]


class Local:
    """Stands in for the local model: what is tested here is the remote call."""

    name = LOCAL

    def classify(self, image: Image.Image) -> Classification:
        return Classification(
            category="can",
            confidence=0.9,
            candidates=[Candidate("can", 0.9)],
            not_sure=False,
            model_version="local",
            head_version=None,
            mapping_note="",
        )


def remote_for(
    provider: str, fake: FakeThirdParties, *, timeout_seconds: float
) -> RemoteClassifier:
    """The provider as production builds it; each retries twice."""
    if provider == "openai":
        return create_openai_classifier(
            api_key="sk-test",
            model="gpt-4o-mini",
            base_url=f"{fake.url}/v1",
            timeout_seconds=timeout_seconds,
            max_retries=2,
        )
    return create_roboflow_classifier(
        api_key="rf-test",
        model_id="taco-trash/3",
        base_url=fake.roboflow_url,
        timeout_seconds=timeout_seconds,
    )


def registry_for(
    provider: str, fake: FakeThirdParties, *, deadline_seconds: float, timeout_seconds: float
) -> ClassifierRegistry:
    return ClassifierRegistry(
        provider,
        local_loader=Local,
        remote=remote_for(provider, fake, timeout_seconds=timeout_seconds),
        remote_deadline_seconds=deadline_seconds,
    )


def seconds_until_its_calls_end(registry: ClassifierRegistry) -> float:
    assert registry._remote_calls is not None
    started = time.monotonic()
    registry._remote_calls.shutdown(wait=True)
    return time.monotonic() - started


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_call_given_up_on_sends_no_retry_and_frees_its_thread(
    third_parties: FakeThirdParties, provider: str
) -> None:
    # The provider fails, but only after the registry has given up: a retry then would be a
    # request paid for and never read.
    third_parties.provider_delay_seconds = 2.0
    third_parties.openai_responses = [(500, {"error": {"message": "boom", "type": "server"}})]
    third_parties.roboflow_responses = [(500, {"message": "boom"})]
    registry = registry_for(provider, third_parties, deadline_seconds=0.3, timeout_seconds=5)

    answer = registry.classify(PHOTO)
    freed_after = seconds_until_its_calls_end(registry)

    assert (answer.provider, answer.classification.category) == (LOCAL, "can")
    assert len(third_parties.provider_requests()) == 1
    # The attempt's timeouts were cut to the budget: its thread is free before the late answer.
    assert freed_after < 1.0


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_retry_that_could_only_start_past_the_budget_is_not_waited_for(
    third_parties: FakeThirdParties, provider: str
) -> None:
    # Retry-After within what the providers honour, but longer than the call has left.
    rate_limited = RawReply(
        {"Content-Type": "application/json", "Retry-After": "2"},
        json.dumps(recording("openai_error_rate_limit.json")).encode(),
    )
    third_parties.openai_responses = [(429, rate_limited)]
    third_parties.roboflow_responses = [(429, rate_limited)]
    registry = registry_for(provider, third_parties, deadline_seconds=1.0, timeout_seconds=5)

    started = time.monotonic()
    answer = registry.classify(PHOTO)
    answered_after = time.monotonic() - started
    freed_after = seconds_until_its_calls_end(registry)

    assert len(third_parties.provider_requests()) == 1
    # The photo falls back at once, for the provider's own reason, not at the deadline.
    assert answer.provider == LOCAL
    assert answer.fallback_reason == f"{provider}: HTTP 429; no time left for another attempt"
    assert answered_after < 0.8
    assert freed_after < 0.5


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_call_whose_budget_is_spent_sends_nothing(
    third_parties: FakeThirdParties, provider: str
) -> None:
    # A call that got its thread only after the registry had given up on it, with a connection
    # from an earlier call open to send it at once.
    remote = remote_for(provider, third_parties, timeout_seconds=5)
    remote.classify(PHOTO)
    with pytest.raises(ProviderError, match="no time left for another attempt"):
        remote.classify(PHOTO, CallBudget(0))
    assert len(third_parties.provider_requests()) == 1
