"""From model outputs to an answer over our category codes.

The same functions run in the service (local.py) and when a head is trained and calibrated
(training.py), so the threshold is chosen on exactly the numbers the service compares with it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from .categories import TRASHNET_TO_CATEGORY
from .head import Head, softmax
from .imagenet_map import IMAGENET_TO_CATEGORY

_IMAGENET_INDEX = np.array(sorted(IMAGENET_TO_CATEGORY), dtype=np.int64)
_IMAGENET_CATEGORY = [IMAGENET_TO_CATEGORY[int(i)][1] for i in _IMAGENET_INDEX]


@dataclass(frozen=True)
class Decision:
    ranked: list[tuple[str, float]]  # every category with mass, best first
    head_probabilities: dict[str, float]  # per head class, calibrated
    top_from_head: bool  # the head, not the ImageNet classes, gave most of the top score
    imagenet_share: float  # probability mass the ImageNet classes took away from the head
    typicality: float  # cosine similarity to the predicted TrashNet class centroid
    atypical: bool  # the features look unlike the photos the head learned from

    @property
    def top(self) -> tuple[str, float]:
        return self.ranked[0]


def decide(
    head: Head, features: NDArray[np.float32], imagenet_logits: NDArray[np.float32]
) -> Decision:
    """`features` (views, 1280) and `imagenet_logits` (views, 1000) of one image's views
    (test-time augmentation): logits are averaged over the views, then calibrated."""
    mean_features = features.mean(axis=0)
    head_probs = softmax(head.logits(mean_features) / head.temperature)
    imagenet_probs = softmax(imagenet_logits.mean(axis=0))

    # Mass of the ImageNet classes that stand for categories TrashNet has no photos of.
    outside: dict[str, float] = {}
    for category, mass in zip(_IMAGENET_CATEGORY, imagenet_probs[_IMAGENET_INDEX], strict=True):
        outside[category] = outside.get(category, 0.0) + float(mass)
    share = min(1.0, sum(outside.values()))

    # A mixture: the head answers for the rest of the mass.
    from_head: dict[str, float] = {}
    for name, p in zip(head.classes, head_probs, strict=True):
        code = class_code(name)
        from_head[code] = from_head.get(code, 0.0) + (1.0 - share) * float(p)
    scores = {c: outside.get(c, 0.0) + from_head.get(c, 0.0) for c in {*outside, *from_head}}
    ranked = sorted(scores.items(), key=lambda item: (-item[1], item[0]))
    top_category = ranked[0][0]

    predicted = int(head_probs.argmax())
    typicality = _typicality(head, mean_features, predicted)
    return Decision(
        ranked=ranked,
        head_probabilities={n: float(p) for n, p in zip(head.classes, head_probs, strict=True)},
        top_from_head=from_head.get(top_category, 0.0) >= outside.get(top_category, 0.0),
        imagenet_share=share,
        typicality=typicality,
        atypical=typicality < head.typicality_threshold,
    )


def answer(
    head: Head,
    first_features: NDArray[np.float32],
    imagenet_logits: NDArray[np.float32],
    other_features: Callable[[], NDArray[np.float32]],
    *,
    cascade: bool,
) -> tuple[Decision, Head]:
    """The decision and the head that made it. In a cascade, the head's first stage (head.py)
    answers alone when it is sure and confident enough; otherwise `other_features()` (the other
    networks' features of the same views) is computed and the whole head decides."""
    first = head.first_stage
    if cascade and first is not None:
        decision = decide(first, first_features, imagenet_logits)
        if decision.top[1] >= head.first_stage_accept and is_sure(decision, first):
            return decision, first
    features = np.concatenate([first_features, other_features()], axis=-1)
    return decide(head, features, imagenet_logits), head


def class_code(head_class: str) -> str:
    """A head class is a TrashNet material (mapped) or, when added from corrections, a code."""
    return TRASHNET_TO_CATEGORY.get(head_class, head_class)


def is_sure(decision: Decision, head: Head) -> bool:
    return sure_under(decision, head.threshold, head.typicality_threshold)


def sure_under(decision: Decision, threshold: float, typicality_threshold: float) -> bool:
    """The not-sure rule at given thresholds (training chooses them with this same rule)."""
    # An answer from the head about a photo unlike its training photos is a guess.
    if decision.top_from_head and decision.typicality < typicality_threshold:
        return False
    return decision.top[1] >= threshold


def _typicality(head: Head, features: NDArray[np.float32], predicted: int) -> float:
    """Cosine similarity to the predicted class's centroid, measured from the mean of the
    centroids (the features are non-negative, so raw cosines would all be high)."""
    if head.centroids is None:
        return 1.0
    origin = head.centroids.mean(axis=0)
    return _cosine(features - origin, head.centroids[predicted] - origin)


def _cosine(a: NDArray[np.float32], b: NDArray[np.float32]) -> float:
    denominator = float(np.linalg.norm(a) * np.linalg.norm(b)) or 1.0
    return float(a @ b) / denominator
