"""The rules knowledge base: its shape, and reading it from the versioned data files in
`knowledge/` (sources, categories, regional overrides, items). The files are the truth; the
loader copies them into the database, and the running service reads them back from there."""

from __future__ import annotations

import hashlib
import json
from datetime import date
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from ecosort_common.categories import CATEGORY_CODES, CategoryCode

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Source(_Strict):
    title: Text
    url: Text | None  # None: no address of its own (a news report, a compilation not traced)
    date: date
    date_kind: Text
    tier: Literal["A", "B", "C", "D"]


class Rule(_Strict):
    """One statement of the rules, with the sources it rests on and the date it holds from."""

    text: Text
    src: list[Text] = Field(min_length=1)
    as_of: date


class Category(_Strict):
    code: CategoryCode
    name_ko: Text
    name_en: Text
    varies_by_region: bool
    disposal: Rule
    steps: list[Rule] = Field(min_length=1)
    mistakes: list[Rule] = Field(min_length=1)
    marks: list[Text]
    # Conditions no disposal destination shows (mixing, gas, a label left on, a broken lamp in
    # its box) that contradict this category's rule when a model's answer advises them; where
    # an answer sends the item is checked apart (grounding.py).
    forbidden: list[Text]


class ItemPart(_Strict):
    category: CategoryCode
    part: Text | None = None
    note: Text | None = None


class Item(_Strict):
    id: Annotated[str, StringConstraints(pattern=r"^[a-z0-9-]+$")]
    name_ko: Text
    name_en: Text
    synonyms: list[Text]
    parts: list[ItemPart] = Field(min_length=1)
    src: list[Text] = Field(min_length=1)

    @property
    def categories(self) -> list[str]:
        return list(dict.fromkeys(part.category for part in self.parts))


class RegionalRule(_Strict):
    """An override or addition for one 시·군·구 (region_code: the 5-digit 행정구역 code)."""

    id: Text
    region_code: Annotated[str, StringConstraints(pattern=r"^\d{5}$")]
    region_name: Text
    aliases: list[Text]
    category: CategoryCode
    text: Text
    src: list[Text] = Field(min_length=1)
    as_of: date


class KnowledgeBase(_Strict):
    data_version: Text
    sources: dict[str, Source]
    categories: list[Category]
    regions: list[RegionalRule]
    items: list[Item]

    @model_validator(mode="after")
    def _consistent(self) -> KnowledgeBase:
        codes = [category.code for category in self.categories]
        if sorted(codes) != sorted(CATEGORY_CODES):
            missing = set(CATEGORY_CODES) - set(codes)
            raise ValueError(f"every category exactly once; missing {missing or 'none'}")
        ids = [item.id for item in self.items]
        if len(ids) != len(set(ids)):
            raise ValueError("item ids must be unique")
        for key in self._cited_keys():
            if key not in self.sources:
                raise ValueError(f"source {key!r} is cited but not defined in sources.json")
        return self

    def _cited_keys(self) -> set[str]:
        keys: set[str] = set()
        for category in self.categories:
            for rule in (category.disposal, *category.steps, *category.mistakes):
                keys.update(rule.src)
        for region in self.regions:
            keys.update(region.src)
        for item in self.items:
            keys.update(item.src)
        return keys

    def category(self, code: str) -> Category | None:
        return next((c for c in self.categories if c.code == code), None)

    def regions_for(self, code: str) -> list[RegionalRule]:
        return [region for region in self.regions if region.category == code]

    def checksum(self) -> str:
        """A digest of the whole content, so a reload can tell "nothing changed". Independent of
        row order: the database hands rows back in its own order."""
        content = self.model_dump(mode="json")
        content["categories"].sort(key=lambda category: category["code"])
        content["regions"].sort(key=lambda region: region["id"])
        content["items"].sort(key=lambda item: item["id"])
        canonical = json.dumps(content, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(canonical.encode()).hexdigest()


def knowledge_dir() -> Path:
    return Path(str(resources.files("ecosort_recycling") / "knowledge"))


def read_knowledge_files(directory: Path | None = None) -> KnowledgeBase:
    """Read and validate the data files; raises pydantic.ValidationError on any defect."""
    root = directory or knowledge_dir()
    manifest = json.loads((root / "manifest.json").read_text("utf-8"))
    files = manifest["files"]
    items: list[object] = []
    for path in sorted((root / files["items"]).glob("*.json")):
        items.extend(json.loads(path.read_text("utf-8")))
    return KnowledgeBase.model_validate(
        {
            "data_version": manifest["data_version"],
            "sources": json.loads((root / files["sources"]).read_text("utf-8")),
            "categories": json.loads((root / files["categories"]).read_text("utf-8")),
            "regions": json.loads((root / files["regions"]).read_text("utf-8")),
            "items": items,
        }
    )
