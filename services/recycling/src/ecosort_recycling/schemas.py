"""Request and response bodies of the recycling API."""

from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import BaseModel, Field

from ecosort_recycling.knowledge_base import CategoryCode


class SourceOut(BaseModel):
    key: str
    title: str
    url: str | None = Field(description="null where the source has no address of its own")
    date: date


class RuleOut(BaseModel):
    text: str
    sources: list[str]
    as_of: date


class RuleSetOut(BaseModel):
    disposal: RuleOut
    steps: list[RuleOut]
    mistakes: list[RuleOut]


class RegionalRuleOut(BaseModel):
    region_code: str
    region_name: str
    text: str
    sources: list[str]
    as_of: date


class CategoryOut(BaseModel):
    code: str
    name_ko: str
    name_en: str
    disposal: str
    steps: list[str]
    mistakes: list[str]
    marks: list[str]
    sources: list[SourceOut]
    varies_by_region: bool
    regional_rules: list[RegionalRuleOut]
    rules: RuleSetOut = Field(description="The same rules, each with its sources and date.")
    data_version: str


class CategoryPage(BaseModel):
    items: list[CategoryOut]
    next_cursor: str | None = None
    data_version: str


class ItemPartOut(BaseModel):
    category: str
    category_name_ko: str
    part: str | None
    note: str | None


class ItemHitOut(BaseModel):
    id: str
    name_ko: str
    name_en: str
    primary_category: str
    categories: list[str]
    parts: list[ItemPartOut]
    synonyms: list[str]
    # A default, so that an answer cached before this field existed still reads back.
    sources: list[SourceOut] = Field(
        default_factory=list,
        description="The sources the item's notes rest on, each with its date.",
    )
    score: float
    matched: str = Field(description="The name, synonym or category name the query matched.")
    match: str = Field(description="exact, prefix, contains, within, words, initials, typo…")


class ItemSearchOut(BaseModel):
    query: str
    items: list[ItemHitOut]
    next_cursor: str | None = Field(
        default=None,
        description="Set while more results exist: pass it as `cursor`, with the same `q`.",
    )
    data_version: str


class FeedbackIn(BaseModel):
    category: CategoryCode
    item: str | None = Field(default=None, max_length=100)
    question: str | None = Field(default=None, max_length=500)
    region: str | None = Field(
        default=None, max_length=50, description="A 5-digit 시·군·구 code or its name (강남구)."
    )


class FeedbackOut(BaseModel):
    category: str
    category_name_ko: str
    item: ItemHitOut | None
    answer: str
    steps: list[str]
    mistakes: list[str]
    source: Literal["rules", "llm"]
    sources: list[SourceOut]
    varies_by_region: bool
    regional_rules: list[RegionalRuleOut]
    data_version: str
    cached: bool = False
    fallback_reason: str | None = Field(
        default=None,
        description="Why a configured model's answer was not used (timeout, error, "
        "invalid_json, invalid_category, empty_answer, off_topic, not_korean, no_destination, "
        "contradicts_rule, budget_exhausted).",
    )
