"""Which district's rules a `region` selects: a code, a name or an alias, never part of one."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from httpx import AsyncClient

from ecosort_recycling.catalog import Catalog
from ecosort_recycling.knowledge_base import read_knowledge_files

PREFIX = "/api/v1/recycling"


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog(read_knowledge_files(), "test")


@pytest.mark.parametrize(
    "region", ["11680", "강남구", "강남", "서울특별시 강남구", "서울특별시강남구", " 강남 구 "]
)
def test_a_code_name_or_alias_selects_the_district(catalog: Catalog, region: str) -> None:
    assert [rule.region_code for rule in catalog.regional_rules_out("pet_clear", region)] == [
        "11680"
    ]


@pytest.mark.parametrize(
    ("category", "region"),
    [
        ("pet_clear", "남구"),  # 부산·대구·울산 남구, not 강남구
        ("pet_clear", "부산 남구"),
        ("pet_clear", "서울"),  # a city is not one of its districts
        ("pet_clear", "1168"),
        ("food", "인천"),
        ("food", "연"),
        ("medicine", "산"),  # not 아산
        ("medicine", ""),
    ],
)
def test_part_of_a_name_selects_nothing(catalog: Catalog, category: str, region: str) -> None:
    assert catalog.regional_rules_out(category, region) == []


async def test_feedback_gives_no_other_districts_rule(
    client: AsyncClient, auth: Callable[[], dict[str, str]]
) -> None:
    response = await client.post(
        f"{PREFIX}/feedback", json={"category": "pet_clear", "region": "남구"}, headers=auth()
    )
    assert response.status_code == 200
    body = response.json()
    assert "강남구" not in body["answer"] and "지역마다 다를 수 있으니" in body["answer"]
