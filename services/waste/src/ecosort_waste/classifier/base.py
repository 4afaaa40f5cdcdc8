"""The provider interface every classifier (local, openai, roboflow…) implements."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

from PIL import Image


@dataclass(frozen=True)
class Candidate:
    category: str
    confidence: float


@dataclass(frozen=True)
class Classification:
    category: str | None  # a DESIGN.md §3 code, or None when not sure
    confidence: float  # calibrated probability of the top candidate, 0..1
    candidates: list[Candidate]  # best first, at most 3
    not_sure: bool
    model_version: str  # e.g. "efficientnet-lite0-ft-int8@1a2b3c4d"
    head_version: str | None  # e.g. "head-v2"; None for providers without a head
    mapping_note: str  # how sure the material → disposal-stream step is
    details: dict[str, Any] = field(default_factory=dict)  # provider-specific, for logs

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@runtime_checkable
class Classifier(Protocol):
    name: str

    def classify(self, image: Image.Image) -> Classification: ...
