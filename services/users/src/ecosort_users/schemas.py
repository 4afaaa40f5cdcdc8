"""Shapes of the users API: what the mobile app reads and sends."""

from __future__ import annotations

import unicodedata
import uuid
from datetime import date, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ecosort_users.regions import Region, parse_region

SUPPORTED_LOCALES = ("ko-KR", "en-US")
NICKNAME_MAX = 30
# Control characters, surrogates, private use and unassigned code points: nothing a person types
# as a name, and what they render as depends on the font, when they render at all.
_NICKNAME_REFUSED_CATEGORIES = frozenset({"Cc", "Cs", "Co", "Cn"})
# The bidirectional embeddings and overrides (U+202A-202E) and isolates (U+2066-2069) reorder the
# text around them, so one name can pass for another. The other format characters (Cf) stay: the
# zero-width joiners (U+200C, U+200D) hold emoji sequences (👨‍👩‍👧) and some scripts together.
_BIDI_CONTROLS = frozenset(chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A)))


def _unfit_for_nickname(ch: str) -> bool:
    return ch in _BIDI_CONTROLS or unicodedata.category(ch) in _NICKNAME_REFUSED_CATEGORIES


def checked_nickname(value: str) -> str:
    """A nickname the person typed (PATCH /me): what does not fit is refused, for them to fix."""
    value = unicodedata.normalize("NFC", value.strip())
    if not 1 <= len(value) <= NICKNAME_MAX:
        raise ValueError(f"a nickname has 1 to {NICKNAME_MAX} characters")
    if any(_unfit_for_nickname(ch) for ch in value):
        raise ValueError(
            "a nickname cannot contain control, private-use, unassigned or "
            "bidirectional-override characters"
        )
    return value


def cleaned_nickname(value: str) -> str | None:
    """A nickname from sign-in (`user.registered`), as the provider had it: nobody is there to fix
    a refusal, so what does not fit is dropped and the rest cut to length. None when nothing is
    left."""
    kept = "".join(ch for ch in value if not _unfit_for_nickname(ch))
    kept = unicodedata.normalize("NFC", kept.strip())[:NICKNAME_MAX].strip()
    return kept or None


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

    nickname: str | None = Field(default=None, description=f"1-{NICKNAME_MAX} characters")
    region: str | None = Field(
        default=None, description="시·군·구 code ('11440') or name ('서울특별시 마포구')"
    )
    locale: str | None = Field(default=None, description=f"one of {', '.join(SUPPORTED_LOCALES)}")

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
    category: str
    confidence: float | None
    completed_at: datetime


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
