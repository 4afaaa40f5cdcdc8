"""The knowledge-base data files: complete, sourced, dated and consistent."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from ecosort_recycling.knowledge_base import (
    CATEGORY_CODES,
    KnowledgeBase,
    knowledge_dir,
    read_knowledge_files,
)

KNOWLEDGE = read_knowledge_files()


def test_all_21_category_codes_are_present_once() -> None:
    assert sorted(c.code for c in KNOWLEDGE.categories) == sorted(CATEGORY_CODES)
    assert len(CATEGORY_CODES) == 21


@pytest.mark.parametrize("code", CATEGORY_CODES)
def test_every_category_is_complete_sourced_and_dated(code: str) -> None:
    category = KNOWLEDGE.category(code)
    assert category is not None
    assert category.name_ko and category.name_en
    assert category.steps, "no preparation steps"
    assert category.mistakes, "no common mistakes"
    for rule in (category.disposal, *category.steps, *category.mistakes):
        assert rule.text.strip()
        assert rule.src, f"rule without a source: {rule.text}"
        assert rule.as_of is not None
        for key in rule.src:
            source = KNOWLEDGE.sources[key]
            assert source.url is None or source.url.startswith("http")
            assert source.date is not None


def test_at_least_300_items_with_synonyms_and_valid_categories() -> None:
    assert len(KNOWLEDGE.items) >= 300
    for item in KNOWLEDGE.items:
        assert item.synonyms, f"{item.id} has no synonyms"
        assert set(item.categories) <= set(CATEGORY_CODES)
    used = {code for item in KNOWLEDGE.items for code in item.categories}
    assert used == set(CATEGORY_CODES), "every category has items"


def test_colloquial_names_people_type_are_covered() -> None:
    names = {
        name.replace(" ", "") for item in KNOWLEDGE.items for name in (item.name_ko, *item.synonyms)
    }
    for word in (
        "보조배터리",
        "페트병",
        "뽁뽁이",
        "택배박스",
        "아이스팩",
        "영수증",
        "치킨뼈",
        "귤껍질",
    ):
        assert word in names


def test_multi_part_item_says_which_part_goes_where() -> None:
    pizza = next(item for item in KNOWLEDGE.items if item.id == "pizza-box")
    assert [part.category for part in pizza.parts] == ["paper", "general"]
    assert all(part.part and part.note for part in pizza.parts)


def test_regional_layer_has_a_real_sourced_override() -> None:
    gangnam = [r for r in KNOWLEDGE.regions if r.region_name == "서울특별시 강남구"]
    assert gangnam and gangnam[0].category == "pet_clear"
    assert "gangnam.go.kr" in KNOWLEDGE.sources[gangnam[0].src[0]].url
    for region in KNOWLEDGE.regions:
        assert KNOWLEDGE.category(region.category) is not None


def test_a_rule_citing_an_unknown_source_is_refused() -> None:
    data = KNOWLEDGE.model_dump(mode="json")
    data["categories"][0]["steps"][0]["src"] = ["S999"]
    with pytest.raises(ValidationError, match="S999"):
        KnowledgeBase.model_validate(data)


def test_a_category_without_steps_is_refused() -> None:
    data = KNOWLEDGE.model_dump(mode="json")
    data["categories"][3]["steps"] = []
    with pytest.raises(ValidationError):
        KnowledgeBase.model_validate(data)


def test_data_version_is_declared_in_the_manifest() -> None:
    manifest = json.loads((knowledge_dir() / "manifest.json").read_text("utf-8"))
    assert KNOWLEDGE.data_version == manifest["data_version"]
