"""Forgiving item search over an in-memory index: spacing, typos, 초성 and synonyms.

Every name and synonym of every item becomes a key in three spellings: spacing-free
(`우유팩`), initial consonants (`ㅇㅇㅍ`) and keyboard jamo (`ㅇㅜㅇㅠㅍㅐㄱ`). A query is scored
against each key (exact > prefix > contained > 초성 > jamo edit similarity) and an item scores
as its best key. A word is also tried without its particle ("캔은" → 캔), and a category's names
("대형폐기물", "소형가전") stand for the items of that category, just below their own names. The
whole list is a few thousand keys, so one query is a linear pass plus a few vectorised
rapidfuzz calls: a millisecond or two, no database round trip.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rapidfuzz import fuzz, process

from ecosort_recycling.hangul import (
    choseong,
    is_choseong_query,
    keystrokes,
    normalize,
    sound_key,
)
from ecosort_recycling.knowledge_base import Category, Item, KnowledgeBase

# Words people add around the thing itself ("다 쓴 보조배터리 버리는 법", "우유팩 어떻게 버려요"),
# removed from the query before matching. Normalised (no spaces), longest first.
FILLER = re.compile(
    "|".join(
        sorted(
            (
                "분리수거",
                "분리배출",
                "버리는방법",
                "버리는법",
                "버리는곳",
                "버리려면",
                "버리기",
                "버려야",
                "버려요",
                "버려",
                "어떻게",
                "어디에",
                "어디",
                "방법",
                "배출",
                "처리",
                "다쓴",
                "남은거",
                "남은것",
                "다먹은",
                "쓰다남은",
            ),
            key=len,
            reverse=True,
        )
    )
)
# Words people use for one another in item names ("사과껍데기" is "사과 껍질", "과자 박스" is
# "과자 상자"): both names and queries are also tried in the canonical spelling.
EQUIVALENT_WORDS = {"껍데기": "껍질", "껍떼기": "껍질", "박스": "상자"}
_EQUIVALENT = re.compile("|".join(EQUIVALENT_WORDS))


def canonical(plain: str) -> str:
    return _EQUIVALENT.sub(lambda match: EQUIVALENT_WORDS[match.group(0)], plain)


# Below this, a fuzzy match is more likely noise than a typo.
MIN_FUZZY = 72.0
# A keystroke similarity this high is one or two slips: no need to look for sound-alikes.
NEAR_TYPO = 85.0

# Particles and polite endings people leave on the thing they ask about ("캔은", "옷은요",
# "휴대폰이랑"), longest first so "이랑" goes before "이". Only ever stripped from a word that
# is not itself a key: "수은" is mercury, not 수 + 은.
PARTICLES = ("이랑", "하고", "은", "는", "이", "가", "을", "를", "도", "요", "에")
# A word stripped of its particle is a little less certain than the word as typed.
STEM_WEIGHT = 0.95
# Below the weakest typo match of the whole query (50 + 0.4 * MIN_FUZZY).
HEAD_SYLLABLE_WEIGHT = 0.75
# A category matches all of its items, just below an item that carries the name itself: "캔"
# is 음료캔 first, and then the rest of 캔류.
CATEGORY_PENALTY = 3.0
# What people call a category besides its data-file name (recycling-rules.md headings, everyday
# words, and the plain English word where name_en is longer: "plastic" must not find the plastic
# straw, a general-waste item, before the plastic stream). Queries matching these find the
# category's items.
CATEGORY_ALIASES: dict[str, tuple[str, ...]] = {
    "paper": ("종이", "폐지"),
    "glass_bottle": ("유리병류",),
    "can": ("금속캔", "철캔", "알루미늄캔"),
    "scrap_metal": ("고철", "비철금속", "고철류"),
    "pet_clear": ("투명페트병",),
    "plastic": ("플라스틱", "플라스틱류", "합성수지", "plastic"),
    "vinyl": ("비닐", "비닐류", "vinyl"),
    "styrofoam": ("스티로폼", "발포합성수지"),
    "textile": ("의류", "섬유"),
    "battery": ("폐건전지", "폐배터리", "전지류"),
    "lamp": ("폐형광등", "lamp"),
    "small_appliance": ("소형가전", "소형 전자제품", "작은 가전"),
    "large_appliance": ("대형가전", "폐가전"),
    "medicine": ("폐의약품", "의약품", "medicine"),
    "food": ("음식물쓰레기", "음식물", "음식물류"),
    "general": ("일반쓰레기", "종량제봉투", "종량제", "생활쓰레기"),
    "nonburnable": ("불연성", "불연성쓰레기", "불연물"),
    "bulky": ("대형폐기물", "대형쓰레기"),
    "cooking_oil": ("폐식용유",),
    "hazardous": ("유해폐기물", "생활계 유해폐기물"),
}
# The final consonants of Korean verb endings ("깨진", "깨짐", "깨질"): a word is the same word
# whichever of them it ends in.
_ENDING_FINALS = frozenset("ㄴㅁㄹ")


@dataclass(frozen=True)
class SearchKey:
    item_index: int  # in the item list; for a category key, in the category list
    text: str
    plain: str
    initials: str
    jamo: str
    sound: str
    is_name: bool
    # A category's name: it stands for the items of the category, see CATEGORY_PENALTY.
    is_category: bool = False


# Records a candidate score for a key's item (keeps the best per item).
_Offer = Callable[[SearchKey, float, str], None]


@dataclass(frozen=True)
class SearchHit:
    item: Item
    score: float
    matched: str
    how: str


def _drop_nominaliser(word: str) -> str:
    # "깨진거", "남은것": the trailing 거/것 ("the one that …") is not part of any item name.
    return word[:-1] if len(word) >= 3 and word[-1] in "거것" else word


def _loose_jamo(word: str) -> str | None:
    """The keystrokes of `word` without a verb ending's final consonant ("깨짐" → ㄲㅐㅈㅣ), or
    None when the word has no such ending."""
    jamo = keystrokes(word)
    if len(word) < 2 or not jamo or jamo[-1] not in _ENDING_FINALS:
        return None
    return jamo[:-1]


class _KeyTable:
    """Keys in their spellings, with the lookups that make matching a linear pass over the keys
    that can match at all."""

    def __init__(self, keys: list[SearchKey]) -> None:
        self.keys = keys
        self.jamo = [key.jamo for key in keys]
        self.sound = [key.sound for key in keys]
        self.exact: dict[str, list[int]] = {}
        # Character → keys: a key that contains, starts, or is inside the query shares its first
        # letter with it.
        self.containing: dict[str, list[int]] = {}
        self.starting: dict[str, list[int]] = {}
        for position, key in enumerate(keys):
            self.exact.setdefault(key.plain, []).append(position)
            for char in set(key.plain):
                self.containing.setdefault(char, []).append(position)
            self.starting.setdefault(key.plain[0], []).append(position)

    def match_initials(self, initials: str, offer: _Offer) -> None:
        for key in self.keys:
            if key.initials == initials:
                offer(key, 95.0, "initials")
            elif key.initials.startswith(initials):
                offer(key, 80.0 + 10.0 * len(initials) / len(key.initials), "initials")
            elif initials in key.initials:
                offer(key, 70.0 + 10.0 * len(initials) / len(key.initials), "initials")

    def match_exact(self, plain: str, offer: _Offer) -> None:
        for position in self.exact.get(plain, ()):
            offer(self.keys[position], 100.0, "exact")

    def _text_candidates(self, plain: str) -> list[SearchKey]:
        positions = set(self.containing.get(plain[0], ()))
        for char in set(plain):
            positions.update(self.starting.get(char, ()))
        return [self.keys[position] for position in sorted(positions)]

    def match_text(self, plain: str, offer: _Offer) -> None:
        jamo = keystrokes(plain)
        for key in self._text_candidates(plain):
            if key.plain == plain:
                offer(key, 100.0, "exact")
            elif key.plain.startswith(plain) or key.jamo.startswith(jamo):
                offer(key, 88.0 + 8.0 * len(plain) / len(key.plain), "prefix")
            elif plain in key.plain:
                offer(key, 80.0 + 8.0 * len(plain) / len(key.plain), "contains")
            elif len(key.plain) >= 2 and key.plain in plain:
                # The query says more than the key ("기름묻은피자박스"): the longer the key's
                # share of the query, the surer the match; Korean puts the head noun last.
                # A key followed by more words names a modifier, not the thing ("먹다남은치킨뼈").
                head = 5.0 if plain.endswith(key.plain) else -5.0
                offer(key, 70.0 + head + 20.0 * len(key.plain) / len(plain), "within")

    def match_all_words(self, words: list[str], offer: _Offer) -> None:
        # Every word inside one key, in any order: "형광등 깨진거" is 깨진 형광등; a verb ending
        # may differ ("형광등 깨짐").
        loose = [_loose_jamo(word) for word in words]
        for position in self.containing.get(words[0][0], ()):
            key = self.keys[position]
            if all(
                word in key.plain or (other is not None and other in key.jamo)
                for word, other in zip(words, loose, strict=True)
            ):
                share = sum(len(word) for word in words) / len(key.plain)
                offer(key, 84.0 + 8.0 * min(share, 1.0), "words")

    def match_fuzzy(self, plain: str, offer: _Offer) -> None:
        # Scaled below the exact tiers: a typo match never outranks a real hit; a sound-alike
        # match (ㅐ/ㅔ, ㅂ/ㅃ/ㅍ merged) ranks just under a keystroke one.
        close = False
        for query, choices, base, how in (
            (keystrokes(plain), self.jamo, 50.0, "typo"),
            (sound_key(plain), self.sound, 48.0, "sound"),
        ):
            if close:  # a near keystroke match exists: the sound-alike pass adds nothing
                break
            for _, score, position in process.extract(
                query, choices, scorer=fuzz.ratio, limit=25, score_cutoff=MIN_FUZZY
            ):
                key = self.keys[position]
                if key.plain in plain:
                    continue  # not a typo but a key inside the query: scored as "within"
                offer(key, base + 0.4 * float(score), how)
                close = close or score >= NEAR_TYPO


def _keys_of(
    index: int, names: Sequence[tuple[str, bool]], *, is_category: bool = False
) -> list[SearchKey]:
    keys: list[SearchKey] = []
    seen: set[str] = set()
    for text, is_name in names:
        raw = normalize(text)
        for plain in (raw, canonical(raw)):
            if not plain or plain in seen:
                continue
            seen.add(plain)
            keys.append(
                SearchKey(
                    index,
                    text,
                    plain,
                    choseong(plain),
                    keystrokes(plain),
                    sound_key(plain),
                    is_name,
                    is_category,
                )
            )
    return keys


class SearchIndex:
    def __init__(self, items: Sequence[Item], categories: Sequence[Category] = ()) -> None:
        # Ties rank by item id: the same order whatever the caller passed (the data files'
        # order, or the database's, whose collation may even sort "e-cigarette" after "earbuds").
        self.items = sorted(items, key=lambda item: item.id)
        keys: list[SearchKey] = []
        for index, item in enumerate(self.items):
            names = [(item.name_ko, True), (item.name_en, False)]
            keys += _keys_of(index, names + [(synonym, False) for synonym in item.synonyms])
        self.keys = keys
        self._items = _KeyTable(keys)
        # A category name ("대형폐기물", "소형가전") stands for the items whose primary part is
        # that category. Its keys live apart from the items' so that a category of forty items
        # is one key, not forty, in the fuzzy pass.
        self._members: list[list[tuple[int, int]]] = []
        category_keys: list[SearchKey] = []
        for category in categories:
            members = self._representatives_first(category)
            if not members:
                continue
            names = [(category.name_ko, False), (category.name_en, False)]
            names += [(alias, False) for alias in CATEGORY_ALIASES.get(category.code, ())]
            category_keys += _keys_of(len(self._members), names, is_category=True)
            self._members.append(members)
        self._categories = _KeyTable(category_keys)
        self._plain_keys = set(self._items.exact) | set(self._categories.exact)

    def _representatives_first(self, category: Category) -> list[tuple[int, int]]:
        """The category's items with their rank when its name is searched: the examples its
        rule names ("가구, 매트리스, 자전거 …" for 대형폐기물) first, in the rule's order, then
        the rest, equal (by id)."""
        rule = normalize(category.disposal.text)
        named: dict[int, int] = {}
        for key in self.keys:
            item = self.items[key.item_index]
            if item.parts[0].category != category.code or len(key.plain) < 2:
                continue
            at = rule.find(key.plain)
            if at >= 0 and at < named.get(key.item_index, len(rule)):
                named[key.item_index] = at
        order = sorted(named, key=lambda index: named[index])
        rank = {index: position for position, index in enumerate(order, start=1)}
        return [
            (index, rank.get(index, len(order) + 1))
            for index, item in enumerate(self.items)
            if item.parts[0].category == category.code
        ]

    @classmethod
    def from_knowledge(cls, knowledge: KnowledgeBase) -> SearchIndex:
        """The index the service searches: items and category names."""
        return cls(knowledge.items, knowledge.categories)

    def __len__(self) -> int:
        return len(self.items)

    @staticmethod
    def clean_query(query: str) -> str:
        plain = normalize(query)
        stripped = FILLER.sub("", plain)
        return canonical(stripped or plain)

    @classmethod
    def query_words(cls, query: str, min_length: int = 2) -> list[str]:
        """The separate words of a multi-word query ("페인트 남은거" → ["페인트"]), each tried
        alone as well: one of them is usually the thing, the rest is what happened to it."""
        words = [_drop_nominaliser(cls.clean_query(word)) for word in query.split()]
        kept = list(dict.fromkeys(w for w in words if len(w) >= min_length))
        return kept[:4] if len(words) > 1 else []

    def stem(self, word: str) -> str | None:
        """`word` without the particles after it ("선풍기는요" → "선풍기"), or None when it has
        none or is a key as it stands."""
        stem = word
        for _ in range(2):  # "는요": a particle and a polite ending
            if stem in self._plain_keys:
                break
            ending = next((p for p in PARTICLES if stem.endswith(p) and len(stem) > len(p)), None)
            if ending is None:
                break
            stem = stem[: -len(ending)]
        return stem if stem != word else None

    @classmethod
    def head_word(cls, query: str) -> str | None:
        """The last word that is not a how-to filler: Korean puts the thing last ("깨끗한 랩",
        "옷 버리는 법")."""
        for word in reversed(query.split()):
            plain = normalize(word)
            if plain and not FILLER.fullmatch(plain):
                return cls.clean_query(word)
        return None

    def search(self, query: str, limit: int = 10) -> list[SearchHit]:
        plain = self.clean_query(query)
        if not plain:
            return []
        # Item → (score, rank, matched, how): rank orders the items a category name found (0 for
        # a match on the item's own name, which is the more specific).
        best: dict[int, tuple[float, int, str, str]] = {}
        weight = 1.0

        def record(index: int, key: SearchKey, score: float, how: str, rank: int) -> None:
            # A name beats a synonym of equal strength, so "캔" finds 음료캔 before 음료캔's kin.
            score = score * weight + (0.5 if key.is_name else 0.0)
            score -= CATEGORY_PENALTY if key.is_category else 0.0
            current = best.get(index)
            if current is None or (score, -rank) > (current[0], -current[1]):
                best[index] = (score, rank, key.text, how)

        def offer(key: SearchKey, score: float, how: str) -> None:
            record(key.item_index, key, score, how, 0)

        def offer_category(key: SearchKey, score: float, how: str) -> None:
            for member, rank in self._members[key.item_index]:
                record(member, key, score, how, rank)

        tables = ((self._items, offer), (self._categories, offer_category))

        def match(text: str) -> None:
            for table, sink in tables:
                if len(text) < 2:  # too short to be a prefix or a typo of anything in particular
                    table.match_exact(text, sink)
                else:
                    table.match_text(text, sink)
                    table.match_fuzzy(text, sink)

        if is_choseong_query(plain):
            for table, sink in tables:
                table.match_initials(plain, sink)
        else:
            for table, sink in tables:
                table.match_text(plain, sink)
                table.match_fuzzy(plain, sink)
            stem = self.stem(plain)
            if stem:
                weight = STEM_WEIGHT
                match(stem)
            # A single word matches with less certainty than the whole query did.
            for word in self.query_words(query):
                weight = 0.85
                if word != plain:
                    match(word)
                stem = self.stem(word)
                if stem and stem != plain:
                    weight = 0.85 * STEM_WEIGHT
                    match(stem)
            # A one-syllable noun counts as the thing only where the thing goes, last: "깨끗한
            # 랩" is cling film, while "못 입는 옷" has nothing to do with nails. It ranks under
            # any match of the whole query, whose other words may say what kind of thing it is
            # ("곰팡이 난 옷" is 곰팡이 핀 옷, general waste, not clothes for the clothing bin).
            head = self.head_word(query)
            if head and len(head) == 1 and len(query.split()) > 1:
                weight = HEAD_SYLLABLE_WEIGHT
                match(head)
            weight = 1.0
            # Every word counts here, one-letter ones too ("치킨 뼈" is not 남은 치킨).
            words = self.query_words(query, min_length=1)
            stems = [self.stem(word) or word for word in words]
            if len(stems) > 1:
                for table, sink in tables:
                    table.match_all_words(stems, sink)
        ranked = sorted(best.items(), key=lambda pair: (-pair[1][0], pair[1][1], pair[0]))
        return [
            SearchHit(self.items[index], round(min(score, 100.0), 1), matched, how)
            for index, (score, _, matched, how) in ranked[:limit]
        ]
