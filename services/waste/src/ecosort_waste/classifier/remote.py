"""What the remote providers (openai, roboflow) share: errors, the category codes they may
answer with, the time a call has in all, and turning their ranked answers into a
`Classification`."""

from __future__ import annotations

import io
import math
import time
from collections.abc import Sequence
from typing import Protocol

from PIL import Image

from ecosort_waste.classifier.base import Candidate, Classification
from ecosort_waste.classifier.categories import CATEGORY_CODES

__all__ = [
    "CATEGORY_CODES",
    "MAX_RETRY_AFTER_SECONDS",
    "UNLIMITED",
    "CallBudget",
    "ProviderError",
    "RemoteClassifier",
    "checked_confidence",
    "jpeg_bytes",
    "ranked_classification",
]

CANDIDATE_COUNT = 3
# Longest Retry-After a remote provider's call waits for; a server asking for more gets no retry
# (the photo falls back to the local model) rather than parking the worker.
MAX_RETRY_AFTER_SECONDS = 5.0


class ProviderError(Exception):
    """A provider could not give an answer (down, timed out, refused, answered nonsense)."""


class CallBudget:
    """The time one remote call has in all, its retries and the pauses between them included.

    The registry gives up on a call when its budget is spent, and a call's thread cannot be
    stopped from outside; so the call stops itself: no attempt starts once the budget is spent,
    none starts with more time than is left, and no pause is taken that would end past it. Past
    the budget nothing more is sent to the provider (nor billed), and the thread is free once
    the attempt in flight ends."""

    def __init__(self, seconds: float) -> None:
        self._ends = time.monotonic() + seconds

    def attempt_seconds(self, configured: float) -> float:
        """The time the attempt about to start may take: `configured`, or what is left of the
        budget when that is less; 0 when nothing is, and then the attempt must not start."""
        return min(configured, max(0.0, self._ends - time.monotonic()))

    def pause(self, seconds: float) -> bool:
        """Waits `seconds` before a retry and says whether to make it: a retry that could only
        start past the budget is not waited for, nor made."""
        if time.monotonic() + seconds >= self._ends:
            return False
        time.sleep(seconds)
        return True


# A call on its own, outside the registry: bounded by its attempts' timeouts only.
UNLIMITED = CallBudget(math.inf)


class RemoteClassifier(Protocol):
    """A provider called over the network, within the budget of the call."""

    name: str

    def classify(self, image: Image.Image, budget: CallBudget = UNLIMITED) -> Classification: ...


def jpeg_bytes(image: Image.Image, *, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def checked_confidence(value: object) -> float:
    """A provider's confidence, or ValueError: a bool or a string is not a confidence, and NaN,
    Infinity or a value outside [0, 1] is nonsense (Infinity would also break the JSON the result
    is saved as)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"confidence is not a number but {type(value).__name__}")
    if not (math.isfinite(value) and 0 <= value <= 1):
        raise ValueError(f"confidence {value!r} is outside [0, 1]")
    return float(value)


def ranked_classification(
    ranked: Sequence[tuple[str, float]],
    *,
    min_confidence: float,
    model_version: str,
    mapping_note: str,
) -> Classification:
    """Best first (category, confidence) pairs → a Classification; below `min_confidence` the
    answer is "not sure" with the candidates instead of a guess, like the local provider."""
    if not ranked:
        raise ProviderError("the provider recognised nothing it could map to a category")
    try:
        ranked = [(category, checked_confidence(confidence)) for category, confidence in ranked]
    except ValueError as exc:
        raise ProviderError(f"{model_version}: {exc}") from exc
    best_category, best_confidence = ranked[0]
    not_sure = best_confidence < min_confidence
    return Classification(
        category=None if not_sure else best_category,
        confidence=best_confidence,
        candidates=[
            Candidate(category=category, confidence=round(confidence, 4))
            for category, confidence in ranked[:CANDIDATE_COUNT]
        ],
        not_sure=not_sure,
        model_version=model_version,
        head_version=None,  # remote models have no head of ours
        mapping_note=mapping_note,
    )
