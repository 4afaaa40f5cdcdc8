"""The checks a model's answer must pass before anyone sees it, against the packaged rules."""

from __future__ import annotations

from typing import Any

import pytest

from ecosort_recycling.catalog import Catalog
from ecosort_recycling.feedback import grounding_for, resolve_item, rules_answer
from ecosort_recycling.grounding import ModelAnswer, Rejected, check_against_rules, mentions
from ecosort_recycling.knowledge_base import read_knowledge_files
from ecosort_recycling.schemas import FeedbackIn

POWER_BANK = {"category": "battery", "item": "보조배터리"}


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog(read_knowledge_files(), "test")


def refusal(catalog: Catalog, reply: ModelAnswer, **request: Any) -> str | None:
    """Why the reply to this request is refused, or None when it may be served."""
    asked = FeedbackIn(**request)
    rules = rules_answer(catalog, asked, resolve_item(catalog, asked.item))
    try:
        check_against_rules(reply, grounding_for(catalog, asked, rules))
    except Rejected as refused:
        return refused.reason
    return None


def reply(
    answer: str, *steps: str, mistakes: tuple[str, ...] = (), category: str = "battery"
) -> ModelAnswer:
    return ModelAnswer(
        category=category,
        answer=answer,
        steps=list(steps) or ["단자에 테이프를 붙입니다."],
        mistakes=list(mistakes),
    )


def test_the_rules_pass_their_own_check(catalog: Catalog) -> None:
    """A model that repeats our rules back, for any category, region or item, is served."""
    requests = [
        FeedbackIn(category=code, region=region)
        for code in catalog.categories
        for region in (None, *(rule.region_code for rule in catalog.regional_rules_out(code)))
    ] + [
        FeedbackIn(category=item.parts[0].category, item=item.name_ko)
        for item in catalog.knowledge.items
    ]
    refused = []
    for asked in requests:
        rules = rules_answer(catalog, asked, resolve_item(catalog, asked.item))
        echo = ModelAnswer(
            category=rules.category, answer=rules.answer, steps=rules.steps, mistakes=rules.mistakes
        )
        try:
            check_against_rules(echo, grounding_for(catalog, asked, rules))
        except Rejected as exc:
            refused.append((asked.category, asked.item, asked.region, exc.reason))
    assert refused == []


@pytest.mark.parametrize(
    "answer",
    [
        "보조배터리는 종량제봉투에 넣지 마세요. 폐건전지 수거함에 넣으세요.",
        "보조배터리는 종량제 봉투에 절대 넣으면 안 됩니다. 폐건전지 수거함에 넣으세요.",
        "보조배터리는 일반 쓰레기가 아니라 폐건전지 수거함에 넣으세요.",
        "보조배터리는 종량제봉투 말고 폐건전지 수거함에 넣으세요.",
    ],
)
def test_a_warning_on_the_destination_itself_passes(catalog: Catalog, answer: str) -> None:
    assert refusal(catalog, reply(answer), **POWER_BANK) is None


@pytest.mark.parametrize(
    ("request_", "answer", "steps"),
    [
        (
            {"category": "battery", "item": "건전지"},
            "다 쓴 건전지는 폐건전지 수거함에 넣으세요. 종량제봉투에 넣으면 화재가 날 수 있습니다.",
            ["단자에 테이프를 붙입니다."],
        ),
        (
            {"category": "battery", "item": "건전지"},
            "건전지는 폐건전지 수거함에 넣어야 하며, 종량제봉투에 버리는 것은 금지되어 있습니다.",
            ["단자에 테이프를 붙입니다."],
        ),
        (
            {"category": "medicine", "item": "영양제"},
            "알약은 포장을 벗겨 약국의 폐의약품 수거함에 넣으세요. "
            "변기나 싱크대에 버리면 수질이 오염됩니다.",
            ["포장을 벗깁니다."],
        ),
        (
            POWER_BANK,
            "보조배터리는 폐건전지 수거함에 넣으세요. "
            "일반쓰레기로 버리면 폭발할 수 있어 위험합니다.",
            ["단자에 테이프를 붙입니다."],
        ),
        (
            POWER_BANK,
            "보조배터리를 종량제봉투에 넣는 것은 안 됩니다. 폐건전지 수거함에 넣으세요.",
            ["단자에 테이프를 붙입니다."],
        ),
    ],
)
def test_a_warning_told_as_a_consequence_or_a_ban_passes(
    catalog: Catalog, request_: dict[str, str], answer: str, steps: list[str]
) -> None:
    """Recorded good answers: "…에 넣으면 <a harm>" and "…것은 금지" warn against the place."""
    good = reply(answer, *steps, category=request_["category"])
    assert refusal(catalog, good, **request_) is None


@pytest.mark.parametrize(
    "answer",
    [
        "망설이지 말고 보조배터리는 종량제봉투에 넣으세요.",
        "보조배터리는 테이프도 붙이지 않고 종량제봉투에 넣으면 됩니다.",
        "폐건전지 수거함이 없으면 보조배터리는 쓰레기봉투에 버리세요.",
        "보조배터리는 폐건전지 수거함에 넣되, 급하면 일반쓰레기로 버려도 됩니다.",
        "보조배터리는 폐건전지 수거함이나 캔류 수거함에 넣으세요.",
        "보조배터리 전해액은 싱크대에 버리고 폐건전지 수거함에 넣으세요.",
        # A consequence is a warning only when it is a harm, and not one denied.
        "보조배터리는 종량제봉투에 버리면 되지만 화재가 날 수 있으니 테이프를 붙이세요.",
        "보조배터리는 테이프만 붙여 종량제봉투에 넣으면 화재 위험이 없습니다.",
        "보조배터리는 종량제봉투에 버리는 것은 금지되지 않습니다.",
    ],
)
def test_a_negation_elsewhere_does_not_excuse_a_destination(catalog: Catalog, answer: str) -> None:
    assert refusal(catalog, reply(answer), **POWER_BANK) == "contradicts_rule"


@pytest.mark.parametrize(
    "bag", ["종량제 봉투", "종량제쓰레기봉투", "일반 쓰레기봉투", "쓰레기 봉투", "종량제 봉지"]
)
def test_the_bag_is_the_bag_under_any_name_and_spacing(bag: str) -> None:
    assert list(mentions(f"{bag}에 넣으세요")) == [("general", "positive")]
    assert list(mentions(f"{bag}에 넣지 마세요")) == [("general", "negated")]


def test_mistakes_may_name_the_wrong_place_but_not_advise_it(catalog: Catalog) -> None:
    answer = "보조배터리는 폐건전지 수거함에 넣으세요."
    for described in (
        "종량제봉투에 넣으면 수거차 화재의 원인이 됩니다.",
        "변기, 싱크대, 종량제봉투에 버리는 것.",
    ):
        assert refusal(catalog, reply(answer, mistakes=(described,)), **POWER_BANK) is None
    advised = "폐건전지 수거함에 넣는 것은 위험하니 종량제봉투에 넣으세요"
    assert refusal(catalog, reply(answer, mistakes=(advised,)), **POWER_BANK) == "contradicts_rule"


@pytest.mark.parametrize(
    ("request_", "answer", "reason"),
    [
        # The item's own rule decides, whatever category was picked (reference §15, §12).
        (
            {"category": "food", "item": "닭뼈"},
            "닭뼈는 음식물 쓰레기로 버리세요.",
            "contradicts_rule",
        ),
        (
            {"category": "food", "item": "닭뼈"},
            "닭뼈는 음식물 쓰레기가 아니라 종량제봉투에 버리세요.",
            None,
        ),
        (
            {"category": "lamp", "item": "깨진 형광등"},
            "깨진 형광등은 수거함에 넣지 말고 신문지로 싸서 불연성 마대에 넣으세요.",
            None,
        ),
        (
            {"category": "lamp"},
            "깨진 형광등도 폐형광등 수거함에 넣으면 됩니다.",
            "contradicts_rule",
        ),
        # Medicine never goes in the bag (reference §14), except where the district's rule
        # says so, and only when that is the person's district.
        (
            {"category": "medicine", "item": "알약"},
            "알약은 종량제봉투에 넣으세요.",
            "contradicts_rule",
        ),
        (
            {"category": "medicine", "item": "알약", "region": "아산시"},
            "아산시에서는 알약을 종량제봉투에 담아 내도 됩니다.",
            None,
        ),
        (
            {"category": "medicine", "item": "알약", "region": "강남구"},
            "알약을 종량제봉투에 담아 내도 됩니다.",
            "contradicts_rule",
        ),
    ],
)
def test_where_it_may_go_comes_from_the_rules_given(
    catalog: Catalog, request_: dict[str, str], answer: str, reason: str | None
) -> None:
    category = request_["category"]
    model_reply = reply(answer, "잘 싸서 냅니다.", category=category)
    assert refusal(catalog, model_reply, **request_) == reason


@pytest.mark.parametrize(
    ("model_reply", "reason"),
    [
        (reply("폐건전지 수거함에 넣으세요.", category="lithium"), "invalid_category"),
        (reply(" ", ""), "empty_answer"),
        (reply("보조배터리는 폐건전지 수거함에 넣으세요.", "  "), "empty_answer"),
        (reply("보조배터리는 폐건전지 수거함에 넣으세요.", mistakes=("",)), "empty_answer"),
        (reply("오늘은 맑고, 삼성전자 주식을 추천합니다.", "주식을 사세요."), "off_topic"),
        (reply("보조배터리는 단자에 테이프를 붙여 절연하세요."), "no_destination"),
    ],
)
def test_unusable_answers_are_refused(
    catalog: Catalog, model_reply: ModelAnswer, reason: str
) -> None:
    assert refusal(catalog, model_reply, **POWER_BANK) == reason


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        # Another stream along with the right one: the rules' own mistake ("캔·고철과 섞는 것").
        ("건전지는 폐건전지 수거함에 넣거나 캔과 함께 버려도 됩니다.", "contradicts_rule"),
        ("건전지는 폐건전지 수거함에 넣거나 고철이랑 섞어서 내도 됩니다.", "contradicts_rule"),
        ("건전지는 폐건전지 수거함에 넣고, 귀찮으면 휴지통에 버려도 됩니다.", "contradicts_rule"),
        ("건전지는 폐건전지 수거함에 넣고, 귀찮으면 쓰레기로 버려도 됩니다.", "contradicts_rule"),
        ("건전지는 폐건전지 수거함에 넣으세요. 캔과 섞지 마세요.", None),
        ("건전지는 폐건전지 수거함에 넣으세요. 휴지통에 버리면 안 됩니다.", None),
    ],
)
def test_other_streams_under_other_words_are_read(
    catalog: Catalog, answer: str, reason: str | None
) -> None:
    assert refusal(catalog, reply(answer), category="battery", item="건전지") == reason


@pytest.mark.parametrize(
    ("model_reply", "reason"),
    [
        # The check reads Korean destinations: in English they were not seen at all.
        (reply("Put the power bank in the 폐건전지 수거함.", "Tape the terminals."), "not_korean"),
        (
            reply("보조배터리는 폐건전지 수거함에 넣으세요. Or just use the general waste bin."),
            "not_korean",
        ),
        (
            reply("보조배터리는 폐건전지 수거함에 넣으세요. 귀찮으면 trash에 버려도 됩니다."),
            "not_korean",
        ),
        (
            reply(
                "보조배터리는 폐건전지 수거함에 넣으세요.", mistakes=("Putting it in the 수거함.",)
            ),
            "not_korean",
        ),
        (reply("モバイルバッテリーは폐건전지 수거함に入れてください。"), "not_korean"),
        # A source the rules we gave do not hold.
        (reply("고시 S99에 따라 보조배터리는 폐건전지 수거함에 넣으세요."), "not_korean"),
        # Abbreviations and units are Korean usage.
        (
            reply("보조배터리는 폐건전지 수거함에 넣으세요. USB 케이블은 빼서 1L 봉지에 모읍니다."),
            None,
        ),
    ],
)
def test_an_answer_is_in_korean(
    catalog: Catalog, model_reply: ModelAnswer, reason: str | None
) -> None:
    assert refusal(catalog, model_reply, **POWER_BANK) == reason


def test_a_question_about_another_item_is_held_to_that_items_rules(catalog: Catalog) -> None:
    # No item given: the rules are general's, but the question is about a power bank.
    asked = {"category": "general", "question": "보조배터리는 어떻게 버려요?"}
    told = reply(
        "보조배터리는 종량제봉투에 넣으세요.", "종량제봉투에 담습니다.", category="general"
    )
    assert refusal(catalog, told, **asked) == "contradicts_rule"
    rules = rules_answer(catalog, FeedbackIn(**asked), None)
    assert grounding_for(catalog, FeedbackIn(**asked), rules).destinations == frozenset()
    # A question naming the item asked about, or only a place, changes nothing.
    same = {"category": "battery", "item": "보조배터리", "question": "보조배터리 어떻게 버려요?"}
    assert refusal(catalog, reply("보조배터리는 폐건전지 수거함에 넣으세요."), **same) is None
    place = {"category": "general", "question": "종량제봉투에 버려도 되나요?"}
    ok = reply(
        "종량제봉투에 담아 정해진 요일에 내놓으세요.", "종량제봉투에 담습니다.", category="general"
    )
    assert refusal(catalog, ok, **place) is None


@pytest.mark.parametrize(
    ("request_", "answer"),
    [
        # A bare 쓰레기 before a collection word is the day or the truck, not the general bag.
        (
            {"category": "can", "item": "캔"},
            "캔은 내용물을 비우고 찌그러뜨려 쓰레기 배출일에 캔류 수거함에 넣으세요.",
        ),
        (
            {"category": "can", "item": "캔"},
            "캔은 캔류 수거함에 넣으세요. 쓰레기 수거 요일을 지켜 주세요.",
        ),
        # 음식물류 쓰레기 is the food stream.
        ({"category": "food"}, "물기를 빼고 음식물류 쓰레기로 배출하세요."),
        # "형광등과 같이" is "like a lamp", not "together with the lamps".
        (
            {"category": "battery", "item": "건전지"},
            "건전지는 형광등과 같이 유해한 폐기물이므로 폐건전지 수거함에 넣으세요.",
        ),
        # Units after a number, spaced as Korean text often spaces them.
        (POWER_BANK, "보조배터리(10,000 mAh)는 폐건전지 수거함에 넣으세요."),
        ({"category": "general"}, "20 L 종량제봉투에 담아 정해진 요일에 내놓으세요."),
    ],
)
def test_everyday_korean_wording_is_not_refused(
    catalog: Catalog, request_: dict[str, str], answer: str
) -> None:
    asked = FeedbackIn(**request_)
    rules = rules_answer(catalog, asked, resolve_item(catalog, asked.item))
    told = reply(answer, *rules.steps, category=asked.category)
    assert refusal(catalog, told, **request_) is None
