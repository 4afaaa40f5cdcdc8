"""What the remote providers (openai, roboflow) share: errors, the category codes they may
answer with, and turning their ranked answers into a `Classification`."""

from __future__ import annotations

import io
from collections.abc import Sequence

from PIL import Image

from ecosort_waste.classifier.base import Candidate, Classification
from ecosort_waste.classifier.categories import CATEGORY_CODES

__all__ = ["CATEGORY_CODES", "ProviderError", "jpeg_bytes", "ranked_classification"]

CANDIDATE_COUNT = 3


class ProviderError(Exception):
    """A provider could not give an answer (down, timed out, refused, answered nonsense)."""


def jpeg_bytes(image: Image.Image, *, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


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
