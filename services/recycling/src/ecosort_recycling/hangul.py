"""Hangul helpers for forgiving search: spacing-free keys, 초성 strings and keystroke jamo.

Why not pg_trgm: whether it sees Hangul at all depends on the database's character class
(checked on the system PostgreSQL 15: `show_trgm('우유팩')` gives four trigrams in a C.UTF-8
database and `{}` in a database created with LC_CTYPE 'C'; the embedded PostgreSQL 18 uses the
builtin C.UTF-8 provider, another variant). Even where it works, syllable trigrams know nothing
of 초성 or of a typo inside a syllable (배→베). The item list is small, so matching happens in
Python over an in-memory index, the same on every server.
"""

from __future__ import annotations

import re
import unicodedata

SYLLABLE_FIRST, SYLLABLE_LAST = 0xAC00, 0xD7A3
# Compatibility jamo (what a keyboard types), in Unicode's syllable-composition order.
CHOSEONG = "ㄱㄲㄴㄷㄸㄹㅁㅂㅃㅅㅆㅇㅈㅉㅊㅋㅌㅍㅎ"
JUNGSEONG = "ㅏㅐㅑㅒㅓㅔㅕㅖㅗㅘㅙㅚㅛㅜㅝㅞㅟㅠㅡㅢㅣ"
JONGSEONG = (
    "",
    *"ㄱㄲㄳㄴㄵㄶㄷㄹㄺㄻㄼㄽㄾㄿㅀㅁㅂㅄㅅㅆㅇㅈㅊㅋㅌㅍㅎ",
)
# Compound letters typed as two keys on the standard 2-set keyboard: splitting them makes a
# half-typed word ("보조배ㅌ") a prefix of the full one, and a wrong vowel cost one edit.
KEYSTROKES = {
    "ㄳ": "ㄱㅅ",
    "ㄵ": "ㄴㅈ",
    "ㄶ": "ㄴㅎ",
    "ㄺ": "ㄹㄱ",
    "ㄻ": "ㄹㅁ",
    "ㄼ": "ㄹㅂ",
    "ㄽ": "ㄹㅅ",
    "ㄾ": "ㄹㅌ",
    "ㄿ": "ㄹㅍ",
    "ㅀ": "ㄹㅎ",
    "ㅄ": "ㅂㅅ",
    "ㅘ": "ㅗㅏ",
    "ㅙ": "ㅗㅐ",
    "ㅚ": "ㅗㅣ",
    "ㅝ": "ㅜㅓ",
    "ㅞ": "ㅜㅔ",
    "ㅟ": "ㅜㅣ",
    "ㅢ": "ㅡㅣ",
}
CONSONANTS = frozenset("ㄱㄲㄳㄴㄵㄶㄷㄸㄹㄺㄻㄼㄽㄾㄿㅀㅁㅂㅃㅄㅅㅆㅇㅈㅉㅊㅋㅌㅍㅎ")
# Everything that is not a Hangul syllable, a jamo, a Latin letter or a digit is spacing or
# punctuation for our purposes ("우유 팩", "책·노트", "페트-병").
_NOT_KEY_CHAR = re.compile(r"[^0-9a-z\uac00-\ud7a3\u3131-\u318e]+")


def _fold(char: str) -> str:
    # NFKC would turn a typed ㅍ (compatibility jamo) into a conjoining jamo: keep those as typed.
    if "\u3131" <= char <= "\u318e":
        return char
    return unicodedata.normalize("NFKC", char)


def normalize(text: str) -> str:
    """Lower-case, width-folded, with spacing and punctuation removed."""
    # Decomposed input (macOS keyboards may send 건 as ㄱ+ㅓ+ㄴ conjoining jamo) recombines only
    # across characters, so the whole string is composed before the per-character folding,
    # which would otherwise see lone jamo and drop them.
    composed = unicodedata.normalize("NFC", text)
    folded = "".join(_fold(char) for char in composed).lower()
    return _NOT_KEY_CHAR.sub("", folded)


def _split_syllable(char: str) -> tuple[str, str, str] | None:
    code = ord(char)
    if not SYLLABLE_FIRST <= code <= SYLLABLE_LAST:
        return None
    index = code - SYLLABLE_FIRST
    return CHOSEONG[index // 588], JUNGSEONG[(index % 588) // 28], JONGSEONG[index % 28]


def choseong(text: str) -> str:
    """The initial consonants of each syllable ("페트병" → "ㅍㅌㅂ"); other characters kept."""
    out = []
    for char in text:
        parts = _split_syllable(char)
        out.append(parts[0] if parts else char)
    return "".join(out)


def keystrokes(text: str) -> str:
    """The jamo a person types on a 2-set keyboard ("왜" → "ㅇㅗㅐ"): the alphabet in which a
    typo such as 배→베 costs one edit."""
    out: list[str] = []
    for char in text:
        parts = _split_syllable(char)
        letters = parts if parts else (char,)
        out.extend(KEYSTROKES.get(letter, letter) for letter in letters)
    return "".join(out)


# Letters people confuse when they type by ear: ㅐ/ㅔ, plain/tense/aspirated consonants.
_SOUND_ALIKE = str.maketrans("ㅒㅖㅐㄲㅋㄸㅌㅃㅍㅆㅉㅊ", "ㅖㅖㅔㄱㄱㄷㄷㅂㅂㅅㅈㅈ")


def sound_key(text: str) -> str:
    """Keystrokes with sound-alike letters merged: "보조빠떼리" and "보조배터리" come close."""
    return keystrokes(text).translate(_SOUND_ALIKE)


def is_choseong_query(text: str) -> bool:
    """True when someone typed only initial consonants, like "ㅍㅌㅂ"."""
    return bool(text) and all(char in CONSONANTS for char in text)
