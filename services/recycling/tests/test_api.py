"""The public rules API and the rules-only feedback, against the loaded database."""

from __future__ import annotations

import unicodedata
from collections.abc import Callable

from fastapi import FastAPI
from httpx import AsyncClient

from ecosort_common.categories import CATEGORY_CODES as SHARED_CATEGORY_CODES
from ecosort_common.testing import problem_schema_name
from ecosort_recycling.catalog import Catalog
from ecosort_recycling.knowledge_base import CATEGORY_CODES

PREFIX = "/api/v1/recycling"
AuthHeaders = Callable[[], dict[str, str]]


async def test_categories_list_has_all_21_with_rules(client: AsyncClient) -> None:
    response = await client.get(f"{PREFIX}/categories")
    assert response.status_code == 200
    body = response.json()
    assert sorted(c["code"] for c in body["items"]) == sorted(CATEGORY_CODES)
    assert body["next_cursor"] is None and body["data_version"]


async def test_category_guidance_body_for_the_waste_pipeline(client: AsyncClient) -> None:
    response = await client.get(f"{PREFIX}/categories/battery")
    assert response.status_code == 200
    body = response.json()
    for field in ("code", "name_ko", "name_en", "disposal", "marks", "varies_by_region"):
        assert field in body
    assert body["code"] == "battery" and body["name_ko"] == "폐건전지·배터리"
    assert body["steps"] and all(isinstance(step, str) for step in body["steps"])
    assert body["mistakes"] and all(isinstance(m, str) for m in body["mistakes"])
    assert body["sources"] and {"title", "url", "date"} <= set(body["sources"][0])
    assert all(rule["sources"] and rule["as_of"] for rule in body["rules"]["steps"])
    assert "max-age" in response.headers["cache-control"]


# What the waste service needs in an answer before it shows it (services/waste/src/ecosort_waste/
# guidance.py REQUIRED_FIELDS); its classifiers answer with any of the shared codes.
WASTE_REQUIRED_FIELDS = frozenset(
    {
        "code",
        "name_ko",
        "name_en",
        "disposal",
        "steps",
        "mistakes",
        "marks",
        "sources",
        "varies_by_region",
    }
)


async def test_every_code_waste_can_produce_gets_guidance(client: AsyncClient) -> None:
    for code in SHARED_CATEGORY_CODES:
        response = await client.get(f"{PREFIX}/categories/{code}")
        assert response.status_code == 200, code
        body = response.json()
        assert body.keys() >= WASTE_REQUIRED_FIELDS and body["code"] == code
        assert body["disposal"] and body["steps"] and body["mistakes"] and body["sources"], code


async def test_regional_override_is_shown_on_its_category(client: AsyncClient) -> None:
    body = (await client.get(f"{PREFIX}/categories/pet_clear")).json()
    assert body["varies_by_region"] is True
    assert any(rule["region_name"] == "서울특별시 강남구" for rule in body["regional_rules"])


async def test_unknown_category_is_404_problem_json(client: AsyncClient) -> None:
    response = await client.get(f"{PREFIX}/categories/plutonium")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["title"] == "Unknown category"


async def test_item_search_forgives_typos_spacing_and_initials(client: AsyncClient) -> None:
    for query, expected in (
        ("보조베터리", "battery"),
        ("우유 팩", "paper_pack"),
        ("ㅍㅌㅂ", "pet_clear"),
    ):
        response = await client.get(f"{PREFIX}/items", params={"q": query, "limit": 3})
        assert response.status_code == 200
        items = response.json()["items"]
        assert items[0]["primary_category"] == expected, query
        assert len(items) <= 3


async def test_item_search_rejects_empty_and_oversized_queries(client: AsyncClient) -> None:
    for params in ({"q": " · "}, {"q": "x" * 101}, {}, {"q": "캔", "limit": 0}):
        response = await client.get(f"{PREFIX}/items", params=params)
        assert response.status_code == 422, params
        assert response.headers["content-type"] == "application/problem+json"


async def test_item_search_pages_through_the_whole_ranking(client: AsyncClient) -> None:
    whole = (await client.get(f"{PREFIX}/items", params={"q": "병", "limit": 50})).json()
    assert len(whole["items"]) > 2 and whole["next_cursor"] is None
    paged: list[str] = []
    cursor: str | None = None
    for _ in range(len(whole["items"])):
        params = {"q": "병", "limit": 1} | ({"cursor": cursor} if cursor else {})
        response = await client.get(f"{PREFIX}/items", params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        paged += [item["id"] for item in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert cursor is None
    assert paged == [item["id"] for item in whole["items"]]


async def test_item_search_refuses_a_foreign_or_malformed_cursor(client: AsyncClient) -> None:
    first = (await client.get(f"{PREFIX}/items", params={"q": "병", "limit": 1})).json()
    assert first["next_cursor"]
    for params in (
        {"q": "캔", "cursor": first["next_cursor"]},  # another query's ranking
        {"q": "병", "cursor": "garbage"},
        {"q": "병", "cursor": "WzAsICJ4Il0"},  # [0, "x"]: well-formed, never handed out
    ):
        response = await client.get(f"{PREFIX}/items", params=params)
        assert response.status_code == 400, params
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["title"] == "Invalid cursor"


async def test_item_search_takes_decomposed_hangul(client: AsyncClient) -> None:
    decomposed = unicodedata.normalize("NFD", "건전지")
    response = await client.get(f"{PREFIX}/items", params={"q": decomposed, "limit": 1})
    assert response.status_code == 200, response.text
    assert response.json()["items"][0]["id"] == "aa-battery"


async def test_item_hit_carries_its_sources_with_dates(client: AsyncClient) -> None:
    body = (await client.get(f"{PREFIX}/items", params={"q": "폐식용유", "limit": 1})).json()
    item = body["items"][0]
    assert item["id"] == "cooking-oil"
    assert [source["key"] for source in item["sources"]] == ["S1", "S4"]
    assert all(source["date"] and source["url"] for source in item["sources"])


async def test_a_source_without_an_address_of_its_own_names_none(client: AsyncClient) -> None:
    """A news report's deposit amounts: no site's home page stands in for the article."""
    body = (await client.get(f"{PREFIX}/items", params={"q": "소주병", "limit": 1})).json()
    sources = {source["key"]: source for source in body["items"][0]["sources"]}
    assert sources["S10"]["url"] is None
    assert "뉴스프라임" in sources["S10"]["title"]


async def test_item_search_refuses_a_cursor_from_before_a_reload(
    client: AsyncClient, app: FastAPI
) -> None:
    first = (await client.get(f"{PREFIX}/items", params={"q": "병", "limit": 2})).json()
    assert first["next_cursor"]
    loaded: Catalog = app.state.catalog
    # What a reload of newer data files puts in place: another version, another ranking.
    knowledge = loaded.knowledge.model_copy(
        update={"items": loaded.knowledge.items[2:], "data_version": "2099.01.01-1"}
    )
    app.state.catalog = Catalog(knowledge, "reloaded")
    try:
        params = {"q": "병", "limit": 2, "cursor": first["next_cursor"]}
        response = await client.get(f"{PREFIX}/items", params=params)
        assert response.status_code == 400, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["title"] == "Invalid cursor"
        fresh = (await client.get(f"{PREFIX}/items", params={"q": "병", "limit": 2})).json()
        params["cursor"] = fresh["next_cursor"]
        assert (await client.get(f"{PREFIX}/items", params=params)).status_code == 200
    finally:
        app.state.catalog = loaded


async def test_feedback_needs_a_signed_in_user(client: AsyncClient) -> None:
    response = await client.post(f"{PREFIX}/feedback", json={"category": "battery"})
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"


async def test_the_openapi_document_says_feedback_is_rate_limited(client: AsyncClient) -> None:
    document = (await client.get(f"{PREFIX}/openapi.json")).json()
    responses = document["paths"][f"{PREFIX}/feedback"]["post"]["responses"]
    assert problem_schema_name(responses["429"]) == "Problem"
    assert "Retry-After" in responses["429"]["headers"]


async def test_feedback_rules_answer_by_default(client: AsyncClient, auth: AuthHeaders) -> None:
    response = await client.post(
        f"{PREFIX}/feedback",
        json={"category": "paper", "item": "기름 묻은 피자 박스"},
        headers=auth(),
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["source"] == "rules" and body["fallback_reason"] is None
    assert body["item"]["id"] == "pizza-box"
    # Which part goes where, from the item's notes.
    assert "깨끗한 뚜껑" in body["answer"] and "기름 밴 바닥" in body["answer"]
    assert body["steps"] and body["mistakes"] and body["sources"]


async def test_feedback_names_the_region_when_the_rule_varies(
    client: AsyncClient, auth: AuthHeaders
) -> None:
    gangnam = await client.post(
        f"{PREFIX}/feedback", json={"category": "pet_clear", "region": "강남구"}, headers=auth()
    )
    assert "[서울특별시 강남구]" in gangnam.json()["answer"]
    unknown_region = await client.post(
        f"{PREFIX}/feedback", json={"category": "pet_clear"}, headers=auth()
    )
    body = unknown_region.json()
    assert "강남구" not in body["answer"] and "지역마다 다를 수 있으니" in body["answer"]
    assert body["regional_rules"], "what we know per region is still listed"
    elsewhere = await client.post(
        f"{PREFIX}/feedback", json={"category": "food", "region": "11110"}, headers=auth()
    )
    body = elsewhere.json()
    assert body["varies_by_region"] is True and "지역마다 다를 수 있으니" in body["answer"]


async def test_feedback_rejects_an_unknown_category(client: AsyncClient, auth: AuthHeaders) -> None:
    response = await client.post(
        f"{PREFIX}/feedback", json={"category": "lithium_waste"}, headers=auth()
    )
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
