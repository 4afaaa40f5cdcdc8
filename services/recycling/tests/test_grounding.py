"""The checks a model's answer must pass before anyone sees it."""

from __future__ import annotations

import pytest

from ecosort_recycling.grounding import Grounding, ModelAnswer, Rejected, check_against_rules

BATTERY = Grounding(
    allowed_categories=["battery"],
    forbidden_phrases=["종량제봉투에 넣", "일반쓰레기로 버리"],
    rules={},
    question=None,
)


def answer(text: str, *steps: str, category: str = "battery") -> ModelAnswer:
    return ModelAnswer(category=category, answer=text, steps=list(steps) or ["절연합니다."])


def test_an_answer_within_the_rules_passes() -> None:
    check_against_rules(answer("폐건전지 수거함에 넣으세요."), BATTERY)


def test_a_warning_may_name_what_is_forbidden() -> None:
    check_against_rules(answer("종량제 봉투에 넣지 마세요. 수거함에 넣으세요."), BATTERY)


@pytest.mark.parametrize(
    ("model_answer", "reason"),
    [
        (answer("수거함에 넣으세요.", category="lithium"), "invalid_category"),
        (answer("작으니 종량제 봉투에 넣으면 됩니다."), "contradicts_rule"),
        (answer("수거함에 넣으세요.", "없으면 일반쓰레기로 버리세요"), "contradicts_rule"),
    ],
)
def test_answers_against_the_rules_are_refused(model_answer: ModelAnswer, reason: str) -> None:
    with pytest.raises(Rejected) as refused:
        check_against_rules(model_answer, BATTERY)
    assert refused.value.reason == reason
