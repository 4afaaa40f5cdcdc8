"""Forgiving item search over an in-memory index: spacing, typos, 초성 and synonyms.

Every name and synonym of every item becomes a key in three spellings: spacing-free
(`우유팩`), initial consonants (`ㅇㅇㅍ`) and keyboard jamo (`ㅇㅜㅇㅠㅍㅐㄱ`). A query is scored
against each key (exact > prefix > contained > 초성 > jamo edit similarity) and an item scores
as its best key. The whole list is a few thousand keys, so one query is a linear pass plus one
vectorised rapidfuzz call: well under a millisecond or two, no database round trip.
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
from ecosort_recycling.knowledge_base import Item

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


@dataclass(frozen=True)
class SearchKey:
    item_index: int
    text: str
    plain: str
    initials: str
    jamo: str
    sound: str
    is_name: bool


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


class SearchIndex:
    def __init__(self, items: Sequence[Item]) -> None:
        self.items = list(items)
        keys: list[SearchKey] = []
        for index, item in enumerate(self.items):
            seen: set[str] = set()
            names = [(item.name_ko, True), (item.name_en, False)]
            names += [(synonym, False) for synonym in item.synonyms]
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
                        )
                    )
        self.keys = keys
        self._jamo = [key.jamo for key in keys]
        self._sound = [key.sound for key in keys]
        # Character → keys, so text matching looks only at keys that can match at all: a key
        # that contains, starts, or is inside the query shares its first letter with it.
        self._containing: dict[str, list[int]] = {}
        self._starting: dict[str, list[int]] = {}
        for position, key in enumerate(keys):
            for char in set(key.plain):
                self._containing.setdefault(char, []).append(position)
            self._starting.setdefault(key.plain[0], []).append(position)

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

    def search(self, query: str, limit: int = 10) -> list[SearchHit]:
        plain = self.clean_query(query)
        if not plain:
            return []
        best: dict[int, tuple[float, str, str]] = {}
        weight = 1.0

        def offer(key: SearchKey, score: float, how: str) -> None:
            # A name beats a synonym of equal strength, so "캔" finds 음료캔 before 음료캔's kin.
            score = score * weight + (0.5 if key.is_name else 0.0)
            current = best.get(key.item_index)
            if current is None or score > current[0]:
                best[key.item_index] = (score, key.text, how)

        if is_choseong_query(plain):
            self._match_initials(plain, offer)
        else:
            self._match_text(plain, offer)
            self._match_fuzzy(plain, offer)
            # A single word matches with less certainty than the whole query did.
            weight = 0.85
            words = self.query_words(query)
            for word in words:
                if word != plain:
                    self._match_text(word, offer)
                    self._match_fuzzy(word, offer)
            weight = 1.0
            # Every word counts here, one-letter ones too ("치킨 뼈" is not 남은 치킨).
            all_words = self.query_words(query, min_length=1)
            if len(all_words) > 1:
                self._match_all_words(all_words, offer)
        ranked = sorted(best.items(), key=lambda pair: (-pair[1][0], pair[0]))
        return [
            SearchHit(self.items[index], round(min(score, 100.0), 1), matched, how)
            for index, (score, matched, how) in ranked[:limit]
        ]

    def _match_initials(self, initials: str, offer: _Offer) -> None:
        for key in self.keys:
            if key.initials == initials:
                offer(key, 95.0, "initials")
            elif key.initials.startswith(initials):
                offer(key, 80.0 + 10.0 * len(initials) / len(key.initials), "initials")
            elif initials in key.initials:
                offer(key, 70.0 + 10.0 * len(initials) / len(key.initials), "initials")

    def _text_candidates(self, plain: str) -> list[SearchKey]:
        positions = set(self._containing.get(plain[0], ()))
        for char in set(plain):
            positions.update(self._starting.get(char, ()))
        return [self.keys[position] for position in sorted(positions)]

    def _match_text(self, plain: str, offer: _Offer) -> None:
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

    def _match_all_words(self, words: list[str], offer: _Offer) -> None:
        # Every word inside one key, in any order: "형광등 깨진거" is 깨진 형광등.
        for position in self._containing.get(words[0][0], ()):
            key = self.keys[position]
            if all(word in key.plain for word in words):
                share = sum(len(word) for word in words) / len(key.plain)
                offer(key, 84.0 + 8.0 * min(share, 1.0), "words")

    def _match_fuzzy(self, plain: str, offer: _Offer) -> None:
        # Scaled below the exact tiers: a typo match never outranks a real hit; a sound-alike
        # match (ㅐ/ㅔ, ㅂ/ㅃ/ㅍ merged) ranks just under a keystroke one.
        close = False
        for query, choices, base, how in (
            (keystrokes(plain), self._jamo, 50.0, "typo"),
            (sound_key(plain), self._sound, 48.0, "sound"),
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
