"""Shapes of the users API: what the mobile app reads and sends."""

from __future__ import annotations

import unicodedata
import uuid
from datetime import date, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.json_schema import SkipJsonSchema

from ecosort_users.regions import Region, parse_region

SUPPORTED_LOCALES = ("ko-KR", "en-US")
NICKNAME_MAX = 30
# Control characters, surrogates, private use and unassigned code points: nothing a person types
# as a name, and what they render as depends on the font, when they render at all. The line and
# paragraph separators (U+2028, U+2029) break the line as a newline (a control) does.
_NICKNAME_REFUSED_CATEGORIES = frozenset({"Cc", "Cs", "Co", "Cn", "Zl", "Zp"})
# Format characters (Cf) are invisible: a zero-width space, a word joiner, a byte order mark or a
# soft hyphen make a blank nickname, or "admin\u200b" that reads as "admin"; the bidirectional
# embeddings, overrides and isolates reorder the text around them. They are all refused but the
# zero-width joiners, which hold emoji sequences (👨‍👩‍👧) and some scripts (Persian's ZWNJ)
# together, and only between visible characters; and the tag characters of a subdivision flag
# (🏴 + tags + CANCEL TAG: 🏴󠁧󠁢󠁳󠁣󠁴󠁿).
_JOINERS = frozenset({"\u200c", "\u200d"})
_FLAG_BASE = "\U0001f3f4"
_TAG_FIRST, _TAG_LAST, _CANCEL_TAG = 0xE0020, 0xE007E, "\U000e007f"
# Default_Ignorable_Code_Point (Unicode's DerivedCoreProperties) outside Cf: rendered as nothing,
# so they do not make a nickname visible (U+3164 HANGUL FILLER, the variation selectors, ...).
_IGNORABLE = frozenset(
    chr(c)
    for c in (
        0x034F,
        0x115F,
        0x1160,
        0x17B4,
        0x17B5,
        *range(0x180B, 0x1810),
        0x3164,
        *range(0xFE00, 0xFE10),
        0xFFA0,
        *range(0x1BCA0, 0x1BCA4),
        *range(0xE0100, 0xE01F0),
    )
)


def _visible(ch: str) -> bool:
    """A character that shows on its own: a letter, digit, punctuation or symbol (emoji)."""
    return unicodedata.category(ch)[0] in "LNPS" and ch not in _IGNORABLE


def _attaches(ch: str) -> bool:
    """What may come before a joiner: a visible character or a mark on one (the variation
    selector of 🏳️‍🌈, the virama of Indic conjuncts)."""
    return _visible(ch) or unicodedata.category(ch)[0] == "M"


def _flag_tags_end(value: str, start: int) -> int:
    """The end of the tag characters of a subdivision flag whose base is at `start`, or `start`
    + 1 when no well-formed tag sequence (one tag or more, then CANCEL TAG) follows it."""
    end = start + 1
    while end < len(value) and _TAG_FIRST <= ord(value[end]) <= _TAG_LAST:
        end += 1
    if end > start + 1 and end < len(value) and value[end] == _CANCEL_TAG:
        return end + 1
    return start + 1


def _unfit_positions(value: str) -> set[int]:
    """Where `value` holds a character that does not fit a nickname, in its context."""
    unfit: set[int] = set()
    i = 0
    while i < len(value):
        ch = value[i]
        if ch == _FLAG_BASE:
            i = _flag_tags_end(value, i)  # its tags, if any, fit
            continue
        category = unicodedata.category(ch)
        if category in _NICKNAME_REFUSED_CATEGORIES:
            unfit.add(i)
        elif category == "Cf":
            between = 0 < i < len(value) - 1 and _attaches(value[i - 1]) and _visible(value[i + 1])
            if ch not in _JOINERS or not between:
                unfit.add(i)
        i += 1
    return unfit


def checked_nickname(value: str) -> str:
    """A nickname the person typed (PATCH /me): what does not fit is refused, for them to fix."""
    value = unicodedata.normalize("NFC", value.strip())
    if not 1 <= len(value) <= NICKNAME_MAX:
        raise ValueError(f"a nickname has 1 to {NICKNAME_MAX} characters")
    if _unfit_positions(value):
        raise ValueError(
            "a nickname cannot contain control, private-use, unassigned or invisible formatting "
            "characters (zero-width joiners only between visible characters)"
        )
    if not any(_visible(ch) for ch in value):
        raise ValueError("a nickname needs at least one visible character")
    return value


def cleaned_nickname(value: str) -> str | None:
    """A nickname from sign-in (`user.registered`), as the provider had it: nobody is there to fix
    a refusal, so what does not fit is dropped and the rest cut to length. None when nothing
    visible is left."""
    kept = None
    while kept != value:  # dropping or cutting may leave a joiner at an end: again until stable
        kept = value
        unfit = _unfit_positions(value)
        value = "".join(ch for i, ch in enumerate(value) if i not in unfit)
        value = unicodedata.normalize("NFC", value.strip())[:NICKNAME_MAX].strip()
    return value if any(_visible(ch) for ch in value) else None


class RegionOut(BaseModel):
    code: str | None = Field(description="5-digit 시·군·구 code, when known")
    name: str


class ProfileOut(BaseModel):
    id: uuid.UUID
    nickname: str | None
    provider: str | None
    email: str | None
    region: RegionOut | None
    locale: str
    created_at: datetime
    updated_at: datetime


class ProfileUpdate(BaseModel):
    """PATCH body: only the fields present change; `region: null` clears the region."""

    model_config = ConfigDict(extra="forbid")

    # Absent is "unchanged" and null is refused (the validators): the document says no null.
    nickname: str | SkipJsonSchema[None] = Field(
        default=None, description=f"1-{NICKNAME_MAX} characters"
    )
    region: str | None = Field(
        default=None, description="시·군·구 code ('11440') or name ('서울특별시 마포구')"
    )
    locale: str | SkipJsonSchema[None] = Field(
        default=None, description=f"one of {', '.join(SUPPORTED_LOCALES)}"
    )

    @field_validator("nickname")
    @classmethod
    def _nickname(cls, value: str | None) -> str | None:
        if value is None:
            raise ValueError("the nickname cannot be removed, only changed")
        return checked_nickname(value)

    @field_validator("locale")
    @classmethod
    def _locale(cls, value: str | None) -> str | None:
        if value is None:
            raise ValueError("the locale cannot be removed, only changed")
        by_lower = {locale.lower(): locale for locale in SUPPORTED_LOCALES}
        canonical = by_lower.get(value.strip().replace("_", "-").lower())
        if canonical is None:
            raise ValueError(f"supported locales: {', '.join(SUPPORTED_LOCALES)}")
        return canonical

    def parsed_region(self) -> Region | None:
        return parse_region(self.region) if self.region is not None else None

    @field_validator("region")
    @classmethod
    def _region(cls, value: str | None) -> str | None:
        if value is not None:
            parse_region(value)  # InvalidRegion is a ValueError: pydantic reports it as a 422
        return value


class HistoryItem(BaseModel):
    analysis_id: uuid.UUID
    category: str = Field(
        description="the owner's correction when corrected_at is set, else the model's answer"
    )
    confidence: float | None = Field(
        description="the model's confidence in its own answer (not in a correction)"
    )
    completed_at: datetime
    corrected_at: datetime | None = Field(
        description="when the owner corrected the category (the newest correction); null: never"
    )


class PendingCorrectionItem(BaseModel):
    """The owner's correction of an analysis not in the history yet: it applies when the
    analysis arrives, and is dropped when the analysis never does (it failed)."""

    analysis_id: uuid.UUID
    category: str
    corrected_at: datetime


class CategoryCount(BaseModel):
    category: str
    count: int


class StatsOut(BaseModel):
    total_analyses: int
    by_category: list[CategoryCount] = Field(description="most frequent first")
    this_month: int = Field(description="analyses since the 1st of this month, local time")
    today: int
    current_streak_days: int = Field(
        description="consecutive days with an analysis, ending today or yesterday"
    )
    longest_streak_days: int
    active_days: int
    first_analysis_at: datetime | None
    last_analysis_at: datetime | None
    timezone: str
    as_of: date


class ExportOut(BaseModel):
    exported_at: datetime
    profile: ProfileOut
    history: list[HistoryItem]
    pending_corrections: list[PendingCorrectionItem] = Field(
        description="corrections of analyses not in the history yet, newest first"
    )
    stats: StatsOut
    format_version: int = 1


def profile_out(profile: Any) -> ProfileOut:
    region = (
        RegionOut(code=profile.region_code, name=profile.region_name)
        if profile.region_name
        else None
    )
    return ProfileOut(
        id=profile.user_id,
        nickname=profile.nickname,
        provider=profile.provider,
        email=profile.email,
        region=region,
        locale=profile.locale,
        created_at=profile.created_at,
        updated_at=profile.updated_at,
    )
