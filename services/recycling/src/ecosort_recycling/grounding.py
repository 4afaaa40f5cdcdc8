"""What a model is given (the retrieved rules) and how its answer is checked against them.

The check reads where a reply sends things rather than looking for bad phrases:
every disposal destination it names ("종량제봉투에", "폐건전지 수거함에",
"음식물 쓰레기로", "변기에") is mapped to its stream, and a stream the rules we gave do
not send this item (or a part of it) to is a contradiction, unless the negation sits on
that destination itself: "종량제봉투에 넣지 마세요" warns, "망설이지 말고 종량제봉투에
넣으세요" advises. The answer must also name a stream the item goes to, and talk about
the item at all. A refusal, a timeout or any error means the caller serves the rules
answer instead.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, Field

from ecosort_recycling.hangul import normalize

NEVER = "never"  # the toilet, the sink, the drain: no rule sends anything there

# Where things go, per stream (a category code), in spacing-free form. The first words are a
# destination wherever they appear; the second are materials that are a destination only when
# a collection word or a directional particle follows ("캔류 수거함", "플라스틱으로"), so that
# "배터리를 빼서" or "종이팩은" is not read as sending anything anywhere.
STREAMS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "paper": ((), ("종이류", "종이", "폐지")),
    "paper_pack": ((), ("종이팩", "우유팩", "멸균팩", "일반팩")),
    "glass_bottle": ((), ("유리병", "유리류", "빈병")),
    "can": ((), ("캔류", "캔", "금속캔")),
    "scrap_metal": ((), ("고철", "고철류", "비철금속", "금속류")),
    "pet_clear": ((), ("투명페트병", "투명페트", "페트병")),
    "plastic": ((), ("플라스틱", "플라스틱류")),
    "vinyl": ((), ("비닐류", "비닐")),
    "styrofoam": ((), ("스티로폼",)),
    "textile": ((), ("의류", "헌옷")),
    "battery": ((), ("폐건전지", "건전지", "폐배터리", "배터리")),
    "lamp": ((), ("폐형광등", "형광등", "폐조명")),
    "small_appliance": ((), ("소형가전", "소형전기전자제품", "소형폐가전", "폐가전")),
    "large_appliance": (("무상방문수거", "방문수거", "15990903"), ("대형가전", "대형폐가전")),
    "medicine": (("우체통",), ("폐의약품", "의약품", "약국")),
    "food": (
        ("음식물쓰레기", "음식물전용봉투", "음식물류폐기물", "납부필증", "rfid수거함"),
        ("음식물", "음식물류"),
    ),
    "general": (
        ("종량제봉투", "일반쓰레기", "생활쓰레기", "일반폐기물", "쓰레기통", "휴지통"),
        ("종량제",),
    ),
    "nonburnable": (
        ("불연성종량제마대", "불연성마대", "특수규격마대", "종량제마대", "마대"),
        ("불연성", "불연성쓰레기", "불연성폐기물"),
    ),
    "bulky": (("배출필증",), ("대형폐기물",)),
    "cooking_oil": ((), ("폐식용유", "식용유")),
    "hazardous": ((), ("생활계유해폐기물", "유해폐기물")),
    # Materials too: "변기" is also an item ("변기 → 대형폐기물"), not only a place.
    NEVER: ((), ("변기", "싱크대", "하수구", "하수도", "배수구")),
}
# The same bag under its many names; the food-waste bag first, so it is not read as the other.
FOLDS = (
    (re.compile(r"음식물류?(?:쓰레기)?(?:전용)?(?:봉투|봉지)"), "음식물전용봉투"),
    (re.compile(r"(?:일반|생활)?(?:종량제용?(?:쓰레기)?|쓰레기)(?:봉투|봉지)"), "종량제봉투"),
    # "쓰레기로" alone is the general bag, but not in these names of other streams.
    (re.compile(r"재활용(?:쓰레기|폐기물)"), "재활용품"),
    (re.compile(r"대형쓰레기"), "대형폐기물"),
    (re.compile(r"음식물류쓰레기"), "음식물쓰레기"),
)
# Destinations only before a particle of direction ("쓰레기로 버려도", "쓰레기와 함께"): before a
# collection word a bare 쓰레기 is the day or the truck ("쓰레기 배출일", "쓰레기 수거 요일").
BY_DIRECTION_ONLY: dict[str, tuple[str, ...]] = {"general": ("쓰레기",)}
_COLLECTION = (
    r"(?:전용)?(?:수거함|수거용기|수거장소|수거통|배출장소|수거|배출|스티커|신고|함(?!께))"
)
_TOWARDS = (
    r"(?=으?로(?!된|만든|만들|되|써|부터)"
    r"|에(?:다가?)?(?:넣|버리|버려|버린|담|내|배출|분리|모아|모으|섞|두|가져|반납|맡|붓|부어|부으|흘려|흘리)"
    # Along with the other stream: "캔과 함께 버려도 됩니다", "고철이랑 섞어서".
    # "와 같이" alone is also "like" ("형광등과 같이 유해한"): only before a verb of disposal.
    r"|(?:와|과|이랑|랑|하고)(?:함께|한꺼번에|섞|같이(?=버리|버려|버린|넣|담|내놓|배출|섞|모아))"
    r"|(?:이랑|랑|하고)같이)"
)


def _term_patterns() -> list[tuple[str, str]]:
    terms = (
        [
            (len(word), re.escape(word), code)
            for code, (places, _) in STREAMS.items()
            for word in places
        ]
        + [
            (len(word), f"{re.escape(word)}(?:{_COLLECTION}|{_TOWARDS})", code)
            for code, (_, materials) in STREAMS.items()
            for word in materials
        ]
        + [
            (len(word), f"{re.escape(word)}{_TOWARDS}", code)
            for code, words in BY_DIRECTION_ONLY.items()
            for word in words
        ]
    )
    # Longest first: "종이팩 수거함" is paper_pack, not "종이" followed by something.
    return [(pattern, code) for _, pattern, code in sorted(terms, key=lambda t: -t[0])]


_PATTERNS = _term_patterns()
_TERMS = re.compile("|".join(f"(?P<t{i}>{p})" for i, (p, _) in enumerate(_PATTERNS)))
_CODES = {f"t{i}": code for i, (_, code) in enumerate(_PATTERNS)}
_ANY_TERM = "|".join(p for p, _ in _PATTERNS)
# "변기, 싱크대, 종량제봉투에 버리는 것": the verb after the last of a list governs all of them.
_LIST = rf"(?:(?:이나|나|또는|혹은|및|이랑|랑|와|과)(?:{_ANY_TERM}|[가-힣]{{1,6}}?))*"
_PARTICLE = (
    r"(?:에다가|에다|에는|에도|에서|에|으로는|으로도|으로|로는|로도|로|가|이|은|는|을|를|도)?"
)
_ADVERB = r"(?:절대로|절대|함부로|그냥|바로)?"
_NOT_OK = r"(?:되|돼|됩|된)"
# Negation attached to the destination: its own verb, at most an adverb away.
_NEGATED = re.compile(
    rf"^{_LIST}{_PARTICLE}(?:"
    rf"아니|아닌|아닙|아냐|말고|대신|[가-힣]{{0,4}}?금지|안{_NOT_OK}"
    rf"|{_ADVERB}(?:안|못)(?:넣|버리|버려|담|내|배출|섞|붓|부어)"
    rf"|{_ADVERB}[가-힣]{{1,5}}?(?:지마|지말|지않|지못|면안{_NOT_OK}|서는안{_NOT_OK}"
    rf"|선안{_NOT_OK}|면절대안))"
)
# How a mistake says it: "종량제봉투에 넣는 것", "종량제봉투에 넣으면 화재의 원인"
# (but not "…넣으면 됩니다").
_FRAMED = re.compile(
    rf"^{_LIST}{_PARTICLE}{_ADVERB}[가-힣]{{1,5}}?"
    r"(?:는것|는일|은것|던것|는경우|기|다가|으면|면)(?!됩|돼|되|좋|괜찮|편|안전|충분)"
)
# A warning told as a consequence: "종량제봉투에 넣으면 화재가 날 수 있습니다", "변기에
# 버리면 수질이 오염됩니다" (but not "…버리면 됩니다", nor a harm denied: "…위험이 없습니다").
_IF = rf"^{_LIST}{_PARTICLE}{_ADVERB}[가-힣]{{1,5}}?(?:으면|면)(?!됩|돼|되|좋|괜찮|편|안전|충분)"
_HARMFUL_IF = re.compile(
    rf"{_IF}.*?(?:화재|폭발|위험|오염|불이|다칠)(?![가-힣]{{0,6}}?(?:없|않|아니))"
)
# "종량제봉투에 버리는 것은 금지되어 있습니다", "…넣는 것은 안 됩니다".
_FORBIDDEN = re.compile(
    rf"^{_LIST}{_PARTICLE}{_ADVERB}[가-힣]{{1,5}}?(?:는|은|던)것(?:은|이|도)?"
    rf"[가-힣]{{0,8}}?(?:금지(?!되지않|하지않|는아니|가아니)|안{_NOT_OK})"
)
SENTENCE_END = re.compile(r"[.!?\n。;]+")

Polarity = Literal["positive", "negated", "framed"]


class ModelAnswer(BaseModel):
    category: str
    answer: str = Field(min_length=1)
    steps: list[str] = Field(min_length=1)
    mistakes: list[str] = []


class Rejected(Exception):
    """The model's answer cannot be used; `reason` goes into the response's fallback_reason."""

    def __init__(self, reason: str, tokens: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        # Tokens the call cost, as the server reported them; None when unknown (a timeout, a
        # reply without usage), and then the whole reservation stays spent.
        self.tokens = tokens


@dataclass(frozen=True)
class Grounding:
    allowed_categories: list[str]
    # Streams the item (or the category, without an item) goes to: the answer must name one.
    destinations: frozenset[str]
    # Streams the steps we gave send a part or a case to ("라벨은 비닐류로").
    also_named: frozenset[str]
    # Streams the rules' own mistakes send a look-alike to ("뼈는 종량제봉투로").
    in_mistakes: frozenset[str]
    # Spacing-free words of the item and category: an answer with none of them is off topic.
    vocabulary: tuple[str, ...]
    # categories.json `forbidden`: conditions no destination check sees ("가스가 남은 채로").
    conditions: tuple[str, ...]
    rules: dict[str, Any]
    question: str | None


def plain(text: str) -> str:
    """Spacing-free, with the bag's variant names folded into one."""
    # NFC first: hangul.normalize drops the conjoining jamo a decomposed string is made of.
    folded = normalize(unicodedata.normalize("NFC", text))
    for pattern, name in FOLDS:
        folded = pattern.sub(name, folded)
    return folded


def _polarity(rest: str) -> Polarity:
    if _NEGATED.match(rest) or _FORBIDDEN.match(rest) or _HARMFUL_IF.match(rest):
        return "negated"
    if _FRAMED.match(rest):
        return "framed"
    return "positive"


def mentions(text: str) -> Iterator[tuple[str, Polarity]]:
    """Each disposal stream the text names, and how."""
    for sentence in SENTENCE_END.split(text):
        line = plain(sentence)
        for match in _TERMS.finditer(line):
            yield _CODES[str(match.lastgroup)], _polarity(line[match.end() :])


def streams_sent_to(texts: Iterable[str], *, framed_too: bool) -> frozenset[str]:
    """Streams the rules' texts send something to. A rule that permits ("종량제봉투에 담아 내는
    것을 허용합니다") reads like a mistake; `framed_too` is for texts that are not mistakes."""
    counted = {"positive", "framed"} if framed_too else {"positive"}
    return frozenset(
        code for text in texts for code, polarity in mentions(text) if polarity in counted
    )


def _conditions_in(text: str, conditions: tuple[str, ...]) -> Iterator[Polarity]:
    for sentence in SENTENCE_END.split(text):
        line = plain(sentence)
        for phrase in conditions:
            start = line.find(phrase)
            while phrase and start != -1:
                yield _polarity(line[start + len(phrase) :])
                start = line.find(phrase, start + 1)


# A word in Latin letters, unless it is a unit after a number ("1L", "5 kg", "10,000 mAh").
_LATIN_WORD = re.compile(r"(?<![0-9A-Za-z])(?<![0-9] )[A-Za-z]+")
# Abbreviations a Korean answer uses as they are (recycling marks, devices).
KNOWN_ABBREVIATIONS = frozenset(
    {"pet", "pp", "pe", "ps", "pvc", "hdpe", "ldpe", "eps", "rfid", "led", "tv", "pc", "cd", "usb"}
)
# Rule fields that are codes and keys, not wording the model was given to use.
_NOT_WORDING = frozenset({"code", "category", "region_code", "as_of", "sources"})


def _wording(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, inner in value.items():
            if key not in _NOT_WORDING:
                yield from _wording(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from _wording(inner)


def _is_korean_letter(char: str) -> bool:
    # Syllables, compatibility jamo, and the conjoining jamo of a decomposed syllable.
    return (
        "\uac00" <= char <= "\ud7a3" or "\u3131" <= char <= "\u318e" or "\u1100" <= char <= "\u11ff"
    )


def _not_korean(texts: Iterable[str], rules: dict[str, Any]) -> bool:
    """Whether the texts use a script other than Hangul, or a Latin word the rules we gave do
    not (PET, RFID…): the destination check reads Korean only, so "general waste" or "trash"
    would otherwise pass unseen, and a Korean question is to be answered in Korean."""
    known = KNOWN_ABBREVIATIONS | {
        word.lower() for text in _wording(rules) for word in _LATIN_WORD.findall(text)
    }
    for text in texts:
        composed = unicodedata.normalize("NFC", text)
        if any(c.isalpha() and not c.isascii() and not _is_korean_letter(c) for c in composed):
            return True
        if any(word.lower() not in known for word in _LATIN_WORD.findall(composed)):
            return True
    return False


def check_against_rules(answer: ModelAnswer, grounding: Grounding) -> None:
    if answer.category not in grounding.allowed_categories:
        raise Rejected("invalid_category")
    advice = [answer.answer, *answer.steps]
    if any(not text.strip() for text in (*advice, *answer.mistakes)):
        raise Rejected("empty_answer")
    if _not_korean((*advice, *answer.mistakes), grounding.rules):
        raise Rejected("not_korean")
    sendable = grounding.destinations | grounding.also_named
    for text in advice:
        for code, polarity in mentions(text):
            if polarity != "negated" and code not in sendable:
                raise Rejected("contradicts_rule")
        if any(p != "negated" for p in _conditions_in(text, grounding.conditions)):
            raise Rejected("contradicts_rule")
    # A mistake names the wrong place on purpose; it may not tell anyone to use it.
    for text in answer.mistakes:
        for code, polarity in mentions(text):
            if polarity == "positive" and code not in sendable | grounding.in_mistakes:
                raise Rejected("contradicts_rule")
        if any(p == "positive" for p in _conditions_in(text, grounding.conditions)):
            raise Rejected("contradicts_rule")
    if not any(word in plain(text) for text in advice for word in grounding.vocabulary):
        raise Rejected("off_topic")
    if not any(
        code in grounding.destinations and polarity != "negated"
        for code, polarity in mentions(answer.answer)
    ):
        raise Rejected("no_destination")
