"""/geocode through Kakao Local, against recorded answers in Kakao's documented format."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import respx
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient
from pydantic import SecretStr

from ecosort_locations.config import Settings
from ecosort_locations.main import create_app

GEOCODE = "/api/v1/locations/geocode"
KAKAO = "https://dapi.kakao.com/v2/local/search/address.json"
# developers.kakao.com, 로컬 API, 주소 검색하기: the answer for "전북 삼성동 100".
KAKAO_ANSWER: dict[str, Any] = {
    "meta": {"total_count": 1, "pageable_count": 1, "is_end": True},
    "documents": [
        {
            "address_name": "전북 익산시 부송동 100",
            "y": "35.97664845766847",
            "x": "126.99597295767953",
            "address_type": "REGION_ADDR",
            "address": {
                "address_name": "전북 익산시 부송동 100",
                "region_1depth_name": "전북",
                "region_2depth_name": "익산시",
                "region_3depth_name": "부송동",
                "region_3depth_h_name": "삼성동",
                "h_code": "4514069000",
                "b_code": "4514013400",
                "mountain_yn": "N",
                "main_address_no": "100",
                "sub_address_no": "",
                "x": "126.99597295767953",
                "y": "35.97664845766847",
            },
            "road_address": {
                "address_name": "전북 익산시 망산길 11-17",
                "region_1depth_name": "전북",
                "region_2depth_name": "익산시",
                "region_3depth_name": "부송동",
                "road_name": "망산길",
                "underground_yn": "N",
                "main_building_no": "11",
                "sub_building_no": "17",
                "building_name": "",
                "zone_no": "54547",
                "y": "35.976749396987046",
                "x": "126.99599512792346",
            },
        }
    ],
}


@pytest.fixture(scope="module")
async def keyed_app(settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(
        settings.model_copy(update={"kakao_rest_api_key": SecretStr("test-kakao-key")})
    )
    async with LifespanManager(application, startup_timeout=30):
        yield application


@pytest.fixture
async def keyed(keyed_app: FastAPI) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(transport=ASGITransport(app=keyed_app), base_url="http://t") as http:
        yield http


async def test_without_a_key_geocoding_is_503_not_configured(client: AsyncClient) -> None:
    response = await client.get(GEOCODE, params={"query": "전북 삼성동 100"})
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert "not configured" in response.json()["detail"]


async def test_an_address_is_found_and_cached(keyed: AsyncClient) -> None:
    query = f"전북 삼성동 100 {uuid.uuid4().hex[:6]}"  # its own cache entry
    with respx.mock(assert_all_called=True) as kakao:
        route = kakao.get(KAKAO).mock(return_value=httpx.Response(200, json=KAKAO_ANSWER))
        first = await keyed.get(GEOCODE, params={"query": query})
        second = await keyed.get(GEOCODE, params={"query": query})
    assert first.status_code == 200, first.text
    assert first.json() == second.json()
    item = first.json()["items"][0]
    assert item["lat"] == pytest.approx(35.97664845766847)
    assert item["lng"] == pytest.approx(126.99597295767953)
    assert item["road_address"] == "전북 익산시 망산길 11-17"
    assert (item["region_2depth"], item["b_code"]) == ("익산시", "4514013400")
    assert route.call_count == 1
    sent = route.calls[0].request
    assert sent.headers["authorization"] == "KakaoAK test-kakao-key"
    assert sent.url.params["query"] == query


@pytest.mark.parametrize(
    ("kakao_answer", "status"),
    [
        (
            httpx.Response(
                401, json={"errorType": "AccessDeniedError", "message": "cannot find appkey"}
            ),
            502,
        ),
        (
            httpx.Response(
                429,
                json={"errorType": "RequestThrottled", "message": "API limit has been exceeded."},
                headers={"Retry-After": "60"},
            ),
            503,
        ),
        (httpx.Response(500, text="<html>oops</html>"), 502),
        (httpx.Response(200, json={"unexpected": True}), 502),
        (httpx.ReadTimeout("slow"), 504),
    ],
)
async def test_kakao_failures_are_problems_not_stack_traces(
    keyed: AsyncClient, kakao_answer: Any, status: int
) -> None:
    with respx.mock() as kakao:
        kakao.get(KAKAO).mock(side_effect=[kakao_answer])
        response = await keyed.get(GEOCODE, params={"query": f"어딘가 {uuid.uuid4().hex[:6]}"})
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert "Traceback" not in response.text
    if status == 503:
        assert response.headers["retry-after"] == "60"


async def test_a_too_short_query_is_a_422(keyed: AsyncClient) -> None:
    response = await keyed.get(GEOCODE, params={"query": "a"})
    assert response.status_code == 422
