"""The registry's fallback to the local model: whatever way a remote provider fails, and when
it takes too long in all."""

from __future__ import annotations

import threading

import pytest
from PIL import Image

from ecosort_waste.classifier.base import Candidate, Classification
from ecosort_waste.classifier.registry import LOCAL, REMOTE_CALL_THREADS, ClassifierRegistry
from ecosort_waste.classifier.remote import CallBudget, ProviderError

PHOTO = Image.new("RGB", (32, 32), "white")


def answer(category: str) -> Classification:
    return Classification(
        category=category,
        confidence=0.9,
        candidates=[Candidate(category, 0.9)],
        not_sure=False,
        model_version=category,
        head_version=None,
        mapping_note="",
    )


class Local:
    name = LOCAL

    def classify(self, image: Image.Image) -> Classification:
        return answer("can")


class Failing:
    name = "openai"

    def __init__(self, error: Exception) -> None:
        self.error = error

    def classify(self, image: Image.Image, budget: CallBudget) -> Classification:
        raise self.error


class Slow:
    """A provider answering byte by byte: each read within its timeout, the whole far later."""

    name = "roboflow"

    def __init__(self) -> None:
        self.released = threading.Event()
        self.calls = 0

    def classify(self, image: Image.Image, budget: CallBudget) -> Classification:
        self.calls += 1
        self.released.wait(10)
        return answer("paper")


@pytest.mark.parametrize(
    "error",
    [
        ProviderError("openai: HTTP 503"),
        AttributeError("'str' object has no attribute 'choices'"),  # a 200 that is not JSON
        RecursionError("maximum recursion depth exceeded"),  # JSON nested without end
    ],
    ids=["provider-error", "unparsed-answer", "nested-json"],
)
def test_any_remote_failure_falls_back_to_the_local_model(error: Exception) -> None:
    registry = ClassifierRegistry("openai", local_loader=Local, remote=Failing(error))
    got = registry.classify(PHOTO)
    assert (got.provider, got.classification.category) == (LOCAL, "can")
    assert got.fallback_reason and str(error) in got.fallback_reason


def test_a_remote_answer_too_late_in_all_is_given_up_for_the_local_model() -> None:
    slow = Slow()
    registry = ClassifierRegistry(
        "roboflow", local_loader=Local, remote=slow, remote_deadline_seconds=0.2
    )
    try:
        got = registry.classify(PHOTO)
    finally:
        slow.released.set()
    assert (got.provider, got.classification.category) == (LOCAL, "can")
    assert got.fallback_reason == "no answer within 0.2 s"


def test_a_remote_answer_in_time_is_the_answer() -> None:
    slow = Slow()
    slow.released.set()
    registry = ClassifierRegistry("roboflow", local_loader=Local, remote=slow)
    got = registry.classify(PHOTO)
    assert (got.provider, got.classification.category) == ("roboflow", "paper")


def test_a_remote_call_still_queued_when_given_up_on_is_never_made() -> None:
    # Every remote thread is held by a call given up on; the next photo's call waits in the
    # queue, the photo falls back, and that call must not start (and be paid for) later.
    slow = Slow()
    registry = ClassifierRegistry(
        "roboflow", local_loader=Local, remote=slow, remote_deadline_seconds=0.2
    )
    held = [
        threading.Thread(target=registry.classify, args=(PHOTO,))
        for _ in range(REMOTE_CALL_THREADS)
    ]
    try:
        for thread in held:
            thread.start()
        for thread in held:
            thread.join()
        got = registry.classify(PHOTO)
    finally:
        slow.released.set()
    assert (got.provider, got.fallback_reason) == (LOCAL, "no answer within 0.2 s")
    assert registry._remote_calls is not None
    registry._remote_calls.shutdown(wait=True)  # lets every call that was to run, run
    assert slow.calls == REMOTE_CALL_THREADS
