"""What a model is given (the retrieved rules) and how its answer is checked against them.

Its answer is refused when it names a category we did not give it, or when a sentence of its
advice says what the rule forbids (for batteries: "put it in the volume-rate bag"). A refusal,
a timeout or any error means the caller serves the rules answer instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field

from ecosort_recycling.hangul import normalize

# A sentence that warns against something ("…에 버리지 마세요") may name a forbidden phrase.
NEGATION = re.compile(r"않|말고|마세요|마십시오|말아|안되|안돼|금지|아닙|아니|불가|피하")
SENTENCE_END = re.compile(r"[.!?\n。]+")


class ModelAnswer(BaseModel):
    category: str
    answer: str = Field(min_length=1)
    steps: list[str] = Field(min_length=1)
    mistakes: list[str] = []


class Rejected(Exception):
    """The model's answer cannot be used; `reason` goes into the response's fallback_reason."""

    def __init__(self, reason: str, tokens: int = 0) -> None:
        super().__init__(reason)
        self.reason = reason
        # Tokens the refused answer still cost: they count against the daily budget.
        self.tokens = tokens


@dataclass(frozen=True)
class Grounding:
    allowed_categories: list[str]
    forbidden_phrases: list[str]
    rules: dict[str, Any]
    question: str | None


def check_against_rules(answer: ModelAnswer, grounding: Grounding) -> None:
    if answer.category not in grounding.allowed_categories:
        raise Rejected("invalid_category")
    forbidden = [normalize(phrase) for phrase in grounding.forbidden_phrases]
    for text in (answer.answer, *answer.steps):
        for sentence in SENTENCE_END.split(text):
            plain = normalize(sentence)
            if any(phrase and phrase in plain for phrase in forbidden) and not NEGATION.search(
                plain
            ):
                raise Rejected("contradicts_rule")
